import Foundation
import PostgresNIO
import Synchronization
import TrackingCore
import TrackingTestSupport

/// LISTENs on one channel from a connection of its own and keeps every doorbell that rings,
/// in arrival order, while `body` runs.
enum DoorbellRecorder {
    final class Doorbells: Sendable {
        private let rung = Mutex<[Doorbell]>([])
        private let malformed = Mutex<[String]>([])

        var all: [Doorbell] { rung.withLock { $0 } }
        var unreadable: [String] { malformed.withLock { $0 } }

        func record(_ payload: String) {
            if let doorbell = try? JSONDecoder().decode(Doorbell.self, from: Data(payload.utf8)) {
                rung.withLock { $0.append(doorbell) }
            } else {
                malformed.withLock { $0.append(payload) }
            }
        }

        /// Waits (bounded) until a doorbell covering `seq` has rung. Doorbells of one channel
        /// arrive in commit order, so every earlier one has been recorded by then.
        func waitFor(seq: Int64, timeout: Duration = .seconds(20)) async throws {
            let deadline = ContinuousClock.now + timeout
            while !all.contains(where: { $0.last >= seq }) {
                if ContinuousClock.now >= deadline {
                    throw SSEClientError(description: "no doorbell for seq \(seq) within \(timeout); rang: \(all.map { "\($0.first)...\($0.last)" })")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    static func listening<T: Sendable>(
        on url: DatabaseURL, channel: String, _ body: @Sendable (Doorbells) async throws -> T
    ) async throws -> T {
        let connection = try await TestCluster.connect(url, applicationName: "pgtrack-test-doorbells")
        let doorbells = Doorbells()
        let (ready, readyContinuation) = AsyncStream<Void>.makeStream()
        do {
            let result = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    try await connection.listen(on: channel) { notifications in
                        readyContinuation.yield()
                        for try await notification in notifications { doorbells.record(notification.payload) }
                    }
                }
                group.addTask {
                    try await Task.sleep(for: .seconds(20))
                    readyContinuation.finish()
                }
                var iterator = ready.makeAsyncIterator()
                guard await iterator.next() != nil else {
                    throw SSEClientError(description: "LISTEN \(channel) did not start within 20 s")
                }
                defer { group.cancelAll() }
                return try await body(doorbells)
            }
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }
}
