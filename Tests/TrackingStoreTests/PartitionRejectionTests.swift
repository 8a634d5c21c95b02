import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A fix whose day has no partition is refused as a whole, never partly written or dropped.
@Suite("positions without a partition")
struct PartitionRejectionTests {
    static func expectNothingWritten(_ client: PostgresClient) async throws {
        #expect(try await client.value("SELECT count(*) FROM positions", as: Int.self) == 0)
        #expect(try await client.value("SELECT count(*) FROM change_log", as: Int.self) == 0)
        #expect(try await client.value("SELECT count(*) FROM latest_positions", as: Int.self) == 0)
        #expect(try await client.value("SELECT last_seq FROM change_log_heads WHERE tenant_id = 'acme'", as: Int64.self) == 0)
    }

    @Test("plain SQL: the INSERT fails with a check violation and leaves no row")
    func viaSQL() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let setup = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            do {
                try await client.run("""
                    INSERT INTO positions (tenant_id, device_id, fix_time, location)
                    VALUES ('acme', \(setup.device.id), now(), ST_SetSRID(ST_MakePoint(1, 2), 4326)::geography),
                           ('acme', \(setup.device.id), now() - interval '400 days', ST_SetSRID(ST_MakePoint(1, 2), 4326)::geography)
                    """)
                Issue.record("a fix 400 days old was accepted")
            } catch let error as PSQLError {
                #expect(error.sqlState == "23514", "\(error.serverInfo?[.message] ?? "\(error)")")
                #expect(error.serverInfo?[.message]?.contains("partition") == true)
            }
            try await Self.expectNothingWritten(client)
        }
    }

    @Test("TrackingRepository.insertPositions: 422 on field timestamp and no row")
    func viaRepository() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let now = Date()
            let batch = [
                ValidatedPosition(latitude: 1, longitude: 2, fixTime: now),
                ValidatedPosition(latitude: 1, longitude: 2, fixTime: now.addingTimeInterval(-400 * 86_400)),
            ]
            do {
                _ = try await repository.insertPositions(batch, device: setup.device)
                Issue.record("a fix 400 days old was accepted")
            } catch let error as APIError {
                #expect(error.status == 422)
                #expect(error.field == "timestamp")
                #expect(error.code == "validation_failed")
            }
            try await Self.expectNothingWritten(client)
        }
    }

    @Test("a fix inside the partition window is stored")
    func insideWindow() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let stored = try await repository.insertPositions(
                [ValidatedPosition(latitude: 1, longitude: 2, fixTime: Date().addingTimeInterval(-20 * 86_400))], device: setup.device)
            #expect(stored.accepted == 1)
            #expect(try await client.value("SELECT count(*) FROM change_log", as: Int.self) == 1)
        }
    }
}
