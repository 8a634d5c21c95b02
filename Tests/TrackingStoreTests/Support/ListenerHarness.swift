import Foundation
import PostgresNIO
import Synchronization
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Runs a NotificationListener in a task group around a test body, then cancels it.
enum ListenerHarness {
    static func make(_ url: DatabaseURL, client: PostgresClient, sink: CollectingSink) -> NotificationListener {
        NotificationListener(
            settings: DatabaseConnectionSettings(url: url),
            repository: TrackingRepository(client: client, logger: TestCluster.logger).asNode,
            sink: sink, logger: TestCluster.logger, pingInterval: .seconds(2))
    }

    /// Runs `listener.run()` while `body` runs, then cancels the task and waits for `run()` to return.
    ///
    /// Returns whether `run()` returned within `cancelGrace` of the cancellation. If it did not,
    /// the listener's connection is terminated from the server side so the test can still end
    /// (see NotificationListenerCancellationTests for the assertion on this).
    @discardableResult
    static func run(
        _ listener: NotificationListener, on url: DatabaseURL, client: PostgresClient, cancelGrace: Duration = .seconds(2),
        _ body: @Sendable (NotificationListener) async throws -> Void
    ) async throws -> Bool {
        let returned = Flag()
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                defer { returned.set() }
                try await listener.run()
            }
            do {
                try await body(listener)
            } catch {
                group.cancelAll()
                _ = await unblock(returned, url: url, client: client, grace: cancelGrace)
                throw error
            }
            group.cancelAll()
            return await unblock(returned, url: url, client: client, grace: cancelGrace)
        }
    }

    /// Waits for `returned`; after `grace`, closes the listener's connection until it is set.
    private static func unblock(_ returned: Flag, url: DatabaseURL, client: PostgresClient, grace: Duration) async -> Bool {
        if await eventually(timeout: grace, { returned.isSet }) { return true }
        _ = await eventually(timeout: .seconds(20)) {
            _ = try? await client.value("""
                SELECT count(pg_terminate_backend(pid))::int8 FROM pg_stat_activity
                 WHERE application_name = 'pgtrack-listener' AND datname = current_database()
                """, as: Int.self)
            return returned.isSet
        }
        return false
    }
}

/// A thread-safe boolean.
final class Flag: Sendable {
    private let value = Mutex(false)
    var isSet: Bool { value.withLock { $0 } }
    func set() { value.withLock { $0 = true } }
}
