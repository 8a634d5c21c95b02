import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("fix filters and rollups", .timeLimit(.minutes(3)))
struct FilterRollupTests {
    @Test("rollups leave flagged fixes out and still equal a from-scratch aggregation of the accepted ones")
    func rollupsSkipFlagged() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let acme = try await TestTenant.create(repository)
            try await client.run("UPDATE tenants SET filter_zero = true, filter_max_speed = 70 WHERE id = 'acme'")
            let start = Date().addingTimeInterval(-1_800)
            var fixes: [ValidatedPosition] = []
            for n in 0..<10 {
                let time = start.addingTimeInterval(Double(n) * 10)
                var latitude = 52.5 + Double(n) * 0.001
                var longitude = 13.4
                if n == 4 { (latitude, longitude) = (0, 0) }       // zero
                if n == 7 { latitude = 53.5 }                      // 100 km in 10 s: max_speed
                fixes.append(ValidatedPosition(latitude: latitude, longitude: longitude, fixTime: time))
            }
            let outcome = try await repository.insertPositions(fixes, device: acme.device)
            #expect(outcome == IngestOutcome(accepted: 8, filtered: 2, dropped: 0, reasons: ["zero": 1, "max_speed": 1]))
            _ = try await Maintenance(client: client, logger: TestCluster.logger).run(daysBack: 30, daysAhead: 7)
            #expect(try await client.value("SELECT sum(points)::bigint FROM rollup_device_daily", as: Int64.self) == 8)
            let distance = try await client.value("SELECT sum(distance_metres) FROM rollup_device_daily", as: Double.self)
            #expect(distance < 1_200, "neither the jump to (0, 0) nor the 100 km outlier is travel: \(distance) m")
            #expect(try await TimeSeries.hourlyMismatches(client) == [])
            #expect(try await TimeSeries.dailyMismatches(client) == [])
        }
    }
}
