import PostgresNIO
import Testing
import TrackingStore
import TrackingTestSupport

/// The trigger tests count doorbells with `recordNotifications`; this shows it counts every one.
@Suite("test support: notification recorder")
struct NotificationRecorderTests {
    @Test("three NOTIFYs in three transactions are three notifications; other channels are not recorded")
    func countsEach() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme"]) {
                for n in 1...3 { try await client.run("SELECT pg_notify('pgtrack.tenant.acme', \(String(n)))") }
                try await client.run("SELECT pg_notify('pgtrack.tenant.other', 'x')")
            }
            #expect(received.payloads("pgtrack.tenant.acme") == ["1", "2", "3"])
            #expect(received.byChannel.keys.sorted() == ["pgtrack.tenant.acme"])
        }
    }
}
