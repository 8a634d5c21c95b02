import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("pgtrack admin: device protocols")
struct IngestAdminCommandTests {
    @Test("create-device --unique-id names the device; create-ingest-key prints a pgi_ key of the tenant")
    func uniqueIDAndIngestKey() async throws {
        let url = try await TestCluster.freshDatabase()
        let tenant = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme"], database: url)
        try #require(tenant.status == 0, "\(tenant)")
        let device = try await PgtrackProcess.run(
            ["admin", "create-device", "--tenant", "acme", "--name", "van", "--unique-id", "356938035643809"], database: url)
        #expect(device.status == 0, "\(device)")
        let key = try #require(try device.json()["api_key"] as? String)
        #expect(try device.json()["unique_id"] as? String == "356938035643809")

        let ingest = try await PgtrackProcess.run(["admin", "create-ingest-key", "--tenant", "acme", "--name", "traccar"], database: url)
        #expect(ingest.status == 0, "\(ingest)")
        let ingestKey = try #require(try ingest.json()["api_key"] as? String)
        #expect(ingestKey.hasPrefix("pgi_"))

        let (identity, ingestTenant) = try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            return (try await repository.authenticateDevice(apiKey: key), try await repository.authenticateIngestKey(ingestKey))
        }
        #expect(identity?.uniqueID?.rawValue == "356938035643809")
        #expect(ingestTenant?.rawValue == "acme")

        let bad = try await PgtrackProcess.run(
            ["admin", "create-device", "--tenant", "acme", "--name", "x", "--unique-id", "has space"], database: url)
        #expect(bad.status != 0)
        #expect(bad.stderr.contains(DeviceUniqueID.rule), "\(bad)")
        let missing = try await PgtrackProcess.run(["admin", "create-ingest-key", "--tenant", "nobody"], database: url)
        #expect(missing.status != 0)
        #expect(missing.stderr.contains("does not exist"), "\(missing)")
    }
}
