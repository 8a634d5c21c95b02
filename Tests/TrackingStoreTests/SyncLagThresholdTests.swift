import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The lag thresholds at their exact boundaries, with a fixed clock (pgtrack_sync_lag's p_now):
/// healthy < 2 s ≤ warning < 5 s ≤ degraded < 10 s ≤ critical, no_data before any event, and the
/// worst status of a set.
@Suite("sync: lag thresholds at the boundaries", .timeLimit(.minutes(2)))
struct SyncLagThresholdTests {
    @Test("each boundary belongs to the worse band; a source time ahead of the clock is no lag")
    func boundaries() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            try await TrackingRepository(client: client, logger: TestCluster.logger).createTenant(id: TenantID("acme")!, name: "Acme")
            #expect(try await Self.status(client, lagMs: nil) == "no_data")
            let cases: [(Int64, String)] = [
                (-5_000, "healthy"), (0, "healthy"), (1_999, "healthy"), (2_000, "warning"), (4_999, "warning"),
                (5_000, "degraded"), (9_999, "degraded"), (10_000, "critical"), (86_400_000, "critical"),
            ]
            for (lagMs, expected) in cases {
                #expect(try await Self.status(client, lagMs: lagMs) == expected, "lag \(lagMs) ms")
            }
            let worst: [([String], String)] = [
                ([], "no_data"), (["no_data", "healthy"], "healthy"), (["healthy", "warning", "no_data"], "warning"),
                (["degraded", "warning"], "degraded"), (["healthy", "critical", "degraded"], "critical"),
            ]
            for (statuses, expected) in worst {
                #expect(try await client.value("SELECT pgtrack_sync_worst(\(statuses))", as: String.self) == expected, "\(statuses)")
            }
        }
    }

    /// The customers table's status when its newest change is `lagMs` old at the fixed clock.
    static func status(_ client: PostgresClient, lagMs: Int64?) async throws -> String {
        let now = "2025-01-01T12:00:00Z"
        try await client.run("DELETE FROM sync.sync_state WHERE tenant_id = 'acme'")
        if let lagMs {
            try await client.run("""
                INSERT INTO sync.sync_state (tenant_id, table_name, last_source_ts, events_applied)
                VALUES ('acme', 'customers', \(now)::timestamptz - make_interval(secs => \(Double(lagMs) / 1000)), 1)
                """)
        }
        let rows = try await client.query("""
            SELECT status, lag_seconds FROM pgtrack_sync_lag('acme', \(now)::timestamptz) WHERE table_name = 'customers'
            """, logger: TestCluster.logger)
        var result: (status: String, lag: Double?)?
        for try await row in rows.decode((String, Double?).self) { result = row }
        let (status, lag) = try #require(result)
        if let lagMs { #expect(lag == max(Double(lagMs) / 1000, 0), "lag_seconds for \(lagMs) ms") } else { #expect(lag == nil) }
        return status
    }
}
