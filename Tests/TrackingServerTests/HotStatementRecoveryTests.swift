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
    @Test("a POST while the ingest function is missing fails; once it is back every POST is stored")
    func ingestFunctionMissing() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            // Before any POST, so that the node's first preparation of the ingest call fails.
            try await live.sql(PostgresQuery(unsafeSQL: "ALTER FUNCTION pgtrack_ingest_positions(jsonb) RENAME TO pgtrack_ingest_positions_away"))
            let failed = try await live.post("/api/v1/locations", apiKey: acme.apiKey, json: Fixes.object(0))
            #expect(failed.status == 500, "\(failed.body)")
            try await live.sql(PostgresQuery(unsafeSQL: "ALTER FUNCTION pgtrack_ingest_positions_away(jsonb) RENAME TO pgtrack_ingest_positions"))
            for n in 1...20 {
                let reply = try await live.post("/api/v1/locations", apiKey: acme.apiKey, json: Fixes.object(n))
                #expect(reply.status == 202, "POST \(n): \(reply.body)")
            }
        }
    }

    @Test("a booking stream opened while its snapshot's function is missing is refused; once it is back every opening works")
    func bookingSnapshotFunctionMissing() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let reply = try await live.post("/api/v1/locations", apiKey: acme.apiKey,
                                            json: #"{"latitude":52.5,"longitude":13.4,"booking_id":"b-1","timestamp":"\#(Date().iso8601)"}"#)
            try #require(reply.status == 202, "\(reply.body)")
            let arguments = "uuid, text, timestamptz, timestamptz, geography, float8, float8, float8, float8, float8, jsonb"
            // The snapshot is prepared inside the stream's tenant transaction: this covers that path.
            try await live.sql(PostgresQuery(unsafeSQL: "ALTER FUNCTION pgtrack_position_json(\(arguments)) RENAME TO pgtrack_position_json_away"))
            // Refused: as an error answer, or a stream that ends before its snapshot.
            await #expect(throws: (any Error).self) {
                _ = try await live.stream("/api/v1/bookings/b-1/stream", apiKey: acme.apiKey).opening()
            }
            try await live.sql(PostgresQuery(unsafeSQL: "ALTER FUNCTION pgtrack_position_json_away(\(arguments)) RENAME TO pgtrack_position_json"))
            for n in 1...10 {
                let stream = try await live.stream("/api/v1/bookings/b-1/stream", apiKey: acme.apiKey)
                let positions = try await stream.opening().object()["positions"] as? [[String: Any]]
                #expect(positions?.count == 1, "opening \(n)")
            }
        }
    }
}
