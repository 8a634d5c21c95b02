import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Daily partitions are created ahead and dropped whole once they leave their retention window,
/// on a clock the test moves; what is still inside the window is untouched.
@Suite("retention", .timeLimit(.minutes(3)))
struct RetentionTests {
    static func partitions(_ client: PostgresClient, of parent: String) async throws -> Set<String> {
        var names: Set<String> = []
        for try await name in try await client.query("""
            SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = \(parent)::regclass
            """, logger: TestCluster.logger).decode(String.self) {
            names.insert(name)
        }
        return names
    }

    static func name(_ parent: String, _ day: Date) -> String {
        let formatter = DateFormatter()
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyyMMdd"
        return "\(parent)_p\(formatter.string(from: day))"
    }

    @Test("25 days on: partitions ahead of the new day exist, days past 30 are dropped, later days keep every row")
    func dropsOnlyExpiredDays() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let acme = try await TestTenant.create(repository)
            let old = TimeSeries.midnight(-10).addingTimeInterval(3_600)
            let kept = TimeSeries.midnight(-2).addingTimeInterval(3_600)
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: old, count: 30), client: client)
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: kept, count: 40), client: client)
            let keptBefore = try await client.value("""
                SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM positions p WHERE fix_time >= \(TimeSeries.midnight(-2))
                """, as: String.self)

            let later = Date().addingTimeInterval(25 * TimeSeries.day)
            let report = try await Maintenance(client: client, logger: TestCluster.logger)
                .run(now: later, daysBack: 30, daysAhead: 7)
            #expect(report.ran)
            #expect(report.retireFailures == [])

            let positions = try await Self.partitions(client, of: "positions")
            #expect(!positions.contains(Self.name("positions", old)), "day -10 is 35 days old at the new clock")
            #expect(positions.contains(Self.name("positions", kept)))
            for ahead in 0...7 {
                let day = later.addingTimeInterval(Double(ahead) * TimeSeries.day)
                #expect(positions.contains(Self.name("positions", day)), "positions partition \(ahead) days ahead")
                #expect(try await Self.partitions(client, of: "change_log").contains(Self.name("change_log", day)))
            }
            let retired = report.retired.filter { $0.parent == "positions" && $0.rows > 0 }
            #expect(retired.map(\.partition) == [Self.name("positions", old)])
            #expect(retired.first?.rows == 30)

            // Nothing in a kept partition changed; nothing of the old day is left.
            #expect(try await client.value("SELECT count(*) FROM positions WHERE fix_time < \(TimeSeries.midnight(-9))", as: Int.self) == 0)
            #expect(try await client.value("""
                SELECT md5(string_agg(p::text, ',' ORDER BY id)) FROM positions p WHERE fix_time >= \(TimeSeries.midnight(-2))
                """, as: String.self) == keptBefore)
            // The rollups consumed the log before it went, and outlive the raw days.
            #expect(try await client.value("SELECT sum(points)::bigint FROM rollup_device_daily", as: Int64.self) == 70)
        }
    }

    @Test("the change log keeps its window: a day older than 24 h is dropped and resuming from before it needs a reset")
    func changeLogWindow() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let acme = try await TestTenant.create(repository)
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: Date().addingTimeInterval(-60), count: 5),
                                        client: client)
            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            // Within the window nothing of today's log goes.
            _ = try await maintenance.run(now: Date().addingTimeInterval(3_600), daysBack: 30, daysAhead: 7)
            let kept = try #require(try await repository.logBounds(tenant: acme.tenant))
            #expect(kept.prunedThrough == 0 && kept.lastSeq == 5)

            // Two days on, today's log partition is past 24 h: dropped whole, pruned_through moves.
            let report = try await maintenance.run(now: Date().addingTimeInterval(2 * TimeSeries.day), daysBack: 30, daysAhead: 7)
            check(report.retired.contains { $0.parent == "change_log" && $0.rows == 5 })
            let bounds = try #require(try await repository.logBounds(tenant: acme.tenant))
            #expect(bounds.prunedThrough == 5 && bounds.lastSeq == 5)
            #expect(!bounds.canResume(after: 2))
            #expect(bounds.canResume(after: 5))
            #expect(try await client.value("SELECT count(*) FROM change_log", as: Int.self) == 0)
            // Positions (30 days) are untouched by the log's window.
            #expect(try await client.value("SELECT count(*) FROM positions", as: Int.self) == 5)
        }
    }

    @Test("a change-log day the rollups have not consumed is not dropped")
    func logWaitsForRollups() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let acme = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: Date(), count: 3), client: client)
            let today = Self.name("change_log", Date())
            do {
                try await client.run("SELECT * FROM pgtrack_retire_partition(\(today))")
                Issue.record("a change-log day the rollups had not read was dropped")
            } catch let error as PSQLError {
                #expect(error.sqlState == "55000", "\(error.serverInfo?[.message] ?? "")")
            }
            #expect(try await client.value("SELECT count(*) FROM change_log", as: Int.self) == 3)
        }
    }

    @Test("retention is a setting per table: 40 days of positions keep day -10 at +25 days; bad settings are refused")
    func retentionSetting() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let acme = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let old = TimeSeries.midnight(-10).addingTimeInterval(3_600)
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: old, count: 10), client: client)
            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            try await maintenance.set("positions_retention_days", to: "40")
            _ = try await maintenance.run(now: Date().addingTimeInterval(25 * TimeSeries.day), daysBack: 30, daysAhead: 7)
            #expect(try await client.value("SELECT count(*) FROM positions", as: Int.self) == 10)
            #expect(try await maintenance.settings().contains(#""positions_retention_days": 40"#))

            for (name, value) in [("positions_retention_days", "0"), ("no_such_setting", "1"), ("compact_before_drop", "maybe")] {
                await #expect(throws: MaintenanceError.self, "\(name)=\(value)") {
                    try await maintenance.set(name, to: value)
                }
            }
            #expect(try await maintenance.settings().contains(#""positions_retention_days": 40"#))
        }
    }
}
