import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("pgtrack admin")
struct AdminCommandTests {
    @Test("create-tenant prints JSON with the tenant id; a second time it fails saying the tenant exists")
    func createTenant() async throws {
        let url = try await TestCluster.freshDatabase()
        let first = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme"], database: url)
        #expect(first.status == 0, "\(first)")
        let json = try first.json()
        #expect(json["tenant_id"] as? String == "acme")
        #expect(json["name"] as? String == "Acme")

        let again = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme again"], database: url)
        #expect(again.status != 0, "\(again)")
        #expect(again.stderr.contains("already exists"), "\(again)")
        #expect(!again.stdout.contains("tenant_id"))
    }

    @Test("a command that succeeds prints its result and nothing else: no pool warning on stderr, in eight runs (it came about half the time)")
    func cleanOutput() async throws {
        let url = try await TestCluster.freshDatabase()
        for i in 0..<8 {
            let result = try await PgtrackProcess.run(["admin", "create-tenant", "t\(i)", "--name", "T\(i)"], database: url)
            #expect(result.status == 0, "\(result)")
            #expect(!result.stderr.contains("warning"), "run \(i): \(result.stderr)")
            #expect(!result.stderr.contains("run() hasn't been called"), "run \(i): \(result.stderr)")
        }
    }

    @Test("create-sync-key prints a pgs_ key once as JSON; an unknown tenant is refused by name")
    func createSyncKey() async throws {
        let url = try await TestCluster.freshDatabase()
        let tenant = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme"], database: url)
        try #require(tenant.status == 0, "\(tenant)")
        let created = try await PgtrackProcess.run(["admin", "create-sync-key", "--tenant", "acme", "--name", "debezium"], database: url)
        #expect(created.status == 0, "\(created)")
        let json = try created.json()
        #expect((json["api_key"] as? String)?.hasPrefix("pgs_") == true, "\(created.stdout)")
        #expect(json["tenant_id"] as? String == "acme" && json["name"] as? String == "debezium")
        #expect((json["key_id"] as? String).flatMap(UUID.init(uuidString:)) != nil)
        let missing = try await PgtrackProcess.run(["admin", "create-sync-key", "--tenant", "nobody"], database: url)
        #expect(missing.status != 0 && missing.stderr.contains("does not exist"), "\(missing)")
    }

    @Test("create-device prints the device id and a pgt_ API key that authenticates")
    func createDevice() async throws {
        let url = try await TestCluster.freshDatabase()
        let tenant = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme"], database: url)
        try #require(tenant.status == 0, "\(tenant)")

        let result = try await PgtrackProcess.run(
            ["admin", "create-device", "--tenant", "acme", "--name", "van", "--group", "north", "--grade", "3"], database: url)
        #expect(result.status == 0, "\(result)")
        let json = try result.json()
        let deviceID = try #require((json["device_id"] as? String).flatMap(UUID.init(uuidString:)), "\(result.stdout)")
        let key = try #require(json["api_key"] as? String)
        #expect(key.hasPrefix("pgt_"))
        #expect(DeviceAPIKey.looksValid(key))
        #expect(json["tenant_id"] as? String == "acme")
        #expect(json["group"] as? String == "north")
        #expect(json["grade"] as? Int == 3)

        let identity = try await TestCluster.withClient(url) { client in
            try await TrackingRepository(client: client, logger: TestCluster.logger).authenticateDevice(apiKey: key)
        }
        #expect(identity?.id == deviceID)
        #expect(identity?.name == "van")
    }

    @Test("a malformed tenant id is refused before touching the database, naming the rule", arguments: [
        ["admin", "create-device", "--tenant", "Bad Tenant!", "--name", "van"],
        ["admin", "create-tenant", "-acme", "--name", "Acme"],
        ["admin", "create-tenant", "ACME", "--name", "Acme"],
    ])
    func malformedTenant(arguments: [String]) async throws {
        let url = try await TestCluster.freshDatabase()
        let result = try await PgtrackProcess.run(arguments, database: url)
        #expect(result.status != 0, "\(result)")
        #expect(result.stderr.contains(TenantID.rule), "\(result)")
    }

    @Test("create-device for a tenant that does not exist says to create it first")
    func missingTenant() async throws {
        let url = try await TestCluster.freshDatabase()
        let result = try await PgtrackProcess.run(["admin", "create-device", "--tenant", "ghost", "--name", "van"], database: url)
        #expect(result.status != 0, "\(result)")
        #expect(result.stderr.contains("ghost"), "\(result)")
        #expect(result.stderr.contains("does not exist"), "\(result)")
        #expect(result.stderr.contains("create-tenant"), "\(result)")
    }

    @Test("an unparsable DATABASE_URL is reported, not crashed on")
    func badDatabaseURL() async throws {
        try PgtrackProcess.requireBinary()
        let result = try await PgtrackProcess.runRaw(["admin", "create-tenant", "acme", "--name", "Acme"],
                                                     environment: ["DATABASE_URL": "mysql://u@h/db"])
        #expect(result.status != 0, "\(result)")
        #expect(result.stderr.contains("postgres://"), "\(result)")
    }
}
