import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("NotificationListener: stopping")
struct NotificationListenerCancellationTests {
    @Test("run() returns promptly when its task is cancelled, with a topic subscribed and the connection idle")
    func cancellationStopsRun() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let setup = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let listener = ListenerHarness.make(url, client: client, sink: CollectingSink())
            let returned = try await ListenerHarness.run(listener, on: url, client: client, cancelGrace: .seconds(10)) { listener in
                try await listener.subscribe(.tenant(setup.tenant))
            }
            #expect(returned, "NotificationListener.run() was still running 10 s after its task was cancelled")
        }
    }
}
