import Foundation
import PostgresNIO
import Synchronization
import TrackingCore
import TrackingTestSupport

/// What a plain LISTENing client sees: every NOTIFY payload per channel, in arrival order.
struct ReceivedNotifications: Sendable {
    var byChannel: [String: [String]] = [:]

    func payloads(_ channel: String) -> [String] { byChannel[channel] ?? [] }

    func doorbells(_ channel: String) throws -> [Doorbell] {
        try payloads(channel).map { try JSONDecoder().decode(Doorbell.self, from: Data($0.utf8)) }
    }
}

/// LISTENs on `channels` from a connection of its own, runs `body`, and returns what arrived.
///
/// Waiting is bounded and deterministic: after `body` a sentinel NOTIFY is sent on the same
/// connection. PostgreSQL delivers notifications in commit order, so once the sentinel arrives
/// every notification of `body`'s (already committed) transactions has arrived too; a short
/// grace period lets the per-channel consumers record them.
func recordNotifications(
    on url: DatabaseURL, channels: [String], during body: @Sendable () async throws -> Void
) async throws -> ReceivedNotifications {
    let connection = try await TestCluster.connect(url, applicationName: "pgtrack-test-recorder")
    let sentinel = "pgtrack.test.sentinel"
    let received = RecorderStore()
    let (ready, readyContinuation) = AsyncStream<String>.makeStream()
    let (sentinelSeen, sentinelContinuation) = AsyncStream<Void>.makeStream()

    do {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for channel in channels + [sentinel] {
                group.addTask {
                    try await connection.listen(on: channel) { notifications in
                        readyContinuation.yield(channel)
                        for try await notification in notifications {
                            if channel == sentinel {
                                sentinelContinuation.yield()
                            } else {
                                received.state.withLock { $0.byChannel[channel, default: []].append(notification.payload) }
                            }
                        }
                    }
                }
            }
            var listening = 0
            for await _ in ready {
                listening += 1
                if listening == channels.count + 1 { break }
            }
            try await body()
            try await connection.query("SELECT pg_notify(\(sentinel), 'done')", logger: TestCluster.logger)
            let arrived = await withTaskGroup(of: Bool.self) { race in
                race.addTask { for await _ in sentinelSeen { return true }; return false }
                race.addTask { try? await Task.sleep(for: .seconds(15)); return false }
                let first = await race.next() ?? false
                race.cancelAll()
                return first
            }
            if !arrived { throw RecorderTimeout() }
            try await Task.sleep(for: .milliseconds(300))
            group.cancelAll()
        }
    } catch {
        try? await connection.close()
        throw error
    }
    try await connection.close()
    return received.state.withLock { $0 }
}

private final class RecorderStore: Sendable {
    let state = Mutex(ReceivedNotifications())
}

struct RecorderTimeout: Error, CustomStringConvertible {
    var description: String { "the sentinel notification did not arrive within 15 seconds" }
}
