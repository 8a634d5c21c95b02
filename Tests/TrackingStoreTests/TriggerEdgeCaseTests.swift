import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("positions trigger: edge cases")
struct TriggerEdgeCaseTests {
    @Test("multi-byte attributes that fit 7,500 characters but not 8,000 bytes ring with the range, not an error")
    func multiByteNotifyPayload() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            // 8 fixes × 500 Cyrillic letters: ~4,000 characters of attributes but ~8,000+ bytes.
            let address = String(repeating: "ж", count: 500)
            let now = Date()
            let batch = (0..<8).map { n in
                ValidatedPosition(latitude: 52.5, longitude: 13.4, fixTime: now.addingTimeInterval(Double(n) - 10),
                                  attributes: ["address": .string(address)])
            }
            let received = try await recordNotifications(on: url, channels: ["pgtrack.tenant.acme"]) {
                _ = try await repository.insertPositions(batch, device: setup.device)
            }
            let bells = try received.doorbells("pgtrack.tenant.acme")
            try #require(bells.count == 1)
            #expect(bells[0].events == nil, "the inline form would exceed pg_notify's 8000-byte limit")
            #expect(try await repository.readLog(.tenant(setup.tenant), after: 0).count == 8)
        }
    }

    @Test("an out-of-order fix is logged with latest=false; the newest with latest=true")
    func latestFlag() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let now = Date()
            _ = try await repository.insertPositions([ValidatedPosition(latitude: 1, longitude: 1, fixTime: now)], device: setup.device)
            _ = try await repository.insertPositions([ValidatedPosition(latitude: 2, longitude: 2, fixTime: now.addingTimeInterval(-30))], device: setup.device)
            // One batch: an older and a newer fix than the stored one; only the newest moves the marker.
            _ = try await repository.insertPositions([
                ValidatedPosition(latitude: 3, longitude: 3, fixTime: now.addingTimeInterval(5)),
                ValidatedPosition(latitude: 4, longitude: 4, fixTime: now.addingTimeInterval(-5)),
            ], device: setup.device)
            let flags = try await repository.readLog(.tenant(setup.tenant), after: 0).map { event in
                let object = try #require(try JSONSerialization.jsonObject(with: Data(event.json.utf8)) as? [String: Any])
                return object["latest"] as? Bool
            }
            #expect(flags == [true, false, true, false])
        }
    }
}
