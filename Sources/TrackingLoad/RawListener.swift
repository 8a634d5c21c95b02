import Foundation
import Logging
import PostgresNIO
import Synchronization
import TrackingStore

/// A bare LISTEN client on one NOTIFY channel: the raw-PostgreSQL side of the latency and
/// fan-out benchmarks. Counts the simulator fixes carried inline in each doorbell and records
/// their latency (posted → notification received).
final class RawListener: Sendable {
    let latency = LatencyRecorder()
    let events = Atomic<Int>(0)
    let notifications = Atomic<Int>(0)
    private let ready = Atomic<Bool>(false)
    private let task = Mutex<Task<Void, Never>?>(nil)
    /// The attribute holding the posting time (µs) of the fixes this listener measures.
    let needle: [UInt8]

    init(timeAttribute: String = "sim_us") {
        needle = Array(timeAttribute.utf8)
    }

    /// Connects and LISTENs; returns once LISTEN is active.
    func start(settings: DatabaseConnectionSettings, channel: String, logger: Logger) async throws {
        let connection = try await PostgresConnection.connect(
            configuration: try settings.connectionConfiguration(applicationName: "pgtrack-bench-listen"), id: 9_999, logger: logger)
        let running = Task {
            try? await connection.listen(on: channel) { notifications in
                self.ready.store(true, ordering: .releasing)
                for try await notification in notifications {
                    let now = wallMicros()
                    self.notifications.add(1, ordering: .relaxed)
                    var payload = notification.payload
                    let count = payload.withUTF8 { bytes in RawListener.scan(bytes, needle: self.needle, now: now, latency: self.latency) }
                    self.events.add(count, ordering: .relaxed)
                }
            }
            // Closed here, awaited: a PostgresConnection must be closed before it is released.
            try? await connection.close()
        }
        task.withLock { $0 = running }
        let deadline = ContinuousClock.now + .seconds(10)
        while !ready.load(ordering: .acquiring), ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(100))  // LISTEN is sent just before the closure runs
    }

    func stop() async {
        let running = task.withLock { $0 }
        running?.cancel()
        await running?.value
    }

    /// Every `needle` (e.g. sim_us) in the (escaped) doorbell text: one fix each.
    static func scan(_ bytes: UnsafeBufferPointer<UInt8>, needle: [UInt8], now: Int64, latency: LatencyRecorder) -> Int {
        var offset = 0
        var count = 0
        while offset < bytes.count {
            guard let found = EventScan.find(needle, in: bytes, from: offset) else { break }
            var index = found + needle.count
            while index < bytes.count, !(48...57).contains(bytes[index]) { index += 1 }
            var value: Int64 = 0
            while index < bytes.count, (48...57).contains(bytes[index]) {
                value = value &* 10 &+ Int64(bytes[index] - 48)
                index += 1
            }
            latency.record(microseconds: now - value)
            count += 1
            offset = index
        }
        return count
    }
}
