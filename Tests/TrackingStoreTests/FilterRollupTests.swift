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

extension FilterRollupTests {
    @Test("concurrent writers: the second is judged after the first commits (the duplicate filter sees its fix)")
    func concurrentWritersSerialised() async throws {
        let url = try await TestCluster.freshDatabase()
        let (tenant, device) = try await TestCluster.withClient(url) { client in
            let acme = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            try await client.run("UPDATE tenants SET filter_duplicate = true WHERE id = 'acme'")
            return (acme.tenant, acme.device.id)
        }
        let time = Date(timeIntervalSince1970: (Date().timeIntervalSince1970 - 60).rounded(.down))
        let insert: PostgresQuery = """
            INSERT INTO positions (tenant_id, device_id, fix_time, location)
            VALUES (\(tenant.rawValue), \(device), \(time), ST_MakePoint(13.4, 52.5)::geography)
            """
        let first = try await TestCluster.connect(url, applicationName: "pgtrack-test-first")
        // A connection dropped unclosed is an assertion that kills the whole test process: if
        // the second connect fails (a timeout on a loaded machine), close the first.
        let second: PostgresConnection
        do {
            second = try await TestCluster.connect(url, applicationName: "pgtrack-test-second")
        } catch {
            try? await first.close()
            throw error
        }
        do {
            _ = try await first.query("BEGIN", logger: TestCluster.logger)
            _ = try await first.query(insert, logger: TestCluster.logger)
            let waiting = Task {
                _ = try await second.query("BEGIN", logger: TestCluster.logger)
                _ = try await second.query(insert, logger: TestCluster.logger)  // waits for the first's head lock
                _ = try await second.query("COMMIT", logger: TestCluster.logger)
            }
            try await Task.sleep(for: .milliseconds(300))
            _ = try await first.query("COMMIT", logger: TestCluster.logger)
            try await waiting.value
            var reasons: [String?] = []
            for try await reason in try await first.query(
                "SELECT filter_reason FROM positions WHERE device_id = \(device) ORDER BY id", logger: TestCluster.logger
            ).decode(String?.self) { reasons.append(reason) }
            #expect(reasons == [nil, "duplicate"])
            try await first.close()
            try await second.close()
        } catch {
            try? await first.close()
            try? await second.close()
            throw error
        }
    }
}
