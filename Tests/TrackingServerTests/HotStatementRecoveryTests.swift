import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The POST path's prepared statements recover from a failed preparation: PostgresNIO would
/// otherwise fail that statement on the same connection for as long as it lives.
@Suite("prepared statements recover", .timeLimit(.minutes(3)))
struct HotStatementRecoveryTests {
    static func sql(_ live: LiveNode, _ text: String) async throws {
        _ = try await TestDatabase.withConnection(live.databaseURL) { connection in
            try await connection.query(PostgresQuery(unsafeSQL: text), logger: TestCluster.logger)
        }
    }

    @Test("a POST while the ingest function is missing fails; once it is back every POST is stored")
    func ingestFunctionMissing() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            // Before any POST, so that the node's first preparation of the ingest call fails.
            try await Self.sql(live, "ALTER FUNCTION pgtrack_ingest_positions(jsonb) RENAME TO pgtrack_ingest_positions_away")
            let failed = try await live.post("/api/v1/locations", apiKey: acme.apiKey, json: Fixes.object(0))
            #expect(failed.status == 500, "\(failed.body)")
            try await Self.sql(live, "ALTER FUNCTION pgtrack_ingest_positions_away(jsonb) RENAME TO pgtrack_ingest_positions")
            for n in 1...20 {
                let reply = try await live.post("/api/v1/locations", apiKey: acme.apiKey, json: Fixes.object(n))
                #expect(reply.status == 202, "POST \(n): \(reply.body)")
            }
        }
    }
}
