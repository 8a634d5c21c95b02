import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("positions trigger: change log, latest position, doorbells")
struct PositionTriggerTests {
    @Test("an older fix after a newer one leaves the latest position unchanged; both are in history")
    func olderFixDoesNotOverwrite() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let now = Date()
            let newer = ValidatedPosition(latitude: 10, longitude: 20, fixTime: now, speed: 1, heading: nil, altitude: nil,
                                          accuracy: nil, battery: nil, bookingID: nil, attributes: [:])
            let older = ValidatedPosition(latitude: 11, longitude: 21, fixTime: now.addingTimeInterval(-60), speed: 2, heading: nil,
                                          altitude: nil, accuracy: nil, battery: nil, bookingID: nil, attributes: [:])
            _ = try await repository.insertPositions([newer], device: setup.device)
            _ = try await repository.insertPositions([older], device: setup.device)

            let latest = try #require(try await repository.latestPosition(device: setup.device.id, tenant: setup.tenant))
            let object = try JSONSerialization.jsonObject(with: Data(latest.json.utf8)) as! [String: Any]
            #expect(object["latitude"] as? Double == 10)
            #expect(object["seq"] as? Int == 1)

            var history = 0
            for try await count in try await client.query(
                "SELECT count(*) FROM positions WHERE device_id = \(setup.device.id)", logger: TestCluster.logger).decode(Int.self) {
                history = count
            }
            #expect(history == 2)
            let log = try await repository.readLog(.tenant(setup.tenant), after: 0)
            #expect(log.map(\.seq) == [1, 2])
        }
    }
}
