import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("tenants and devices")
struct TenantAndDeviceTests {
    @Test("every tenant gets a change-log head at seq 0, also when inserted with plain SQL")
    func heads() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            try await repository.createTenant(id: TenantID("acme")!, name: "Acme")
            try await client.run("INSERT INTO tenants (id, name) VALUES ('north', 'North'), ('south', 'South')")
            let heads = try await client.value(
                "SELECT array_agg(tenant_id || ':' || last_seq || ':' || pruned_through ORDER BY tenant_id) FROM change_log_heads",
                as: [String].self)
            #expect(heads == ["acme:0:0", "north:0:0", "south:0:0"])
            let bounds = try #require(try await repository.logBounds(tenant: TenantID("acme")!))
            #expect(bounds.prunedThrough == 0 && bounds.lastSeq == 0)
            #expect(try await repository.logBounds(tenant: TenantID("nobody")!) == nil)
        }
    }

    @Test("creating a tenant twice is a 409 conflict")
    func duplicateTenant() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            try await repository.createTenant(id: TenantID("acme")!, name: "Acme")
            await #expect(throws: APIError(status: 409, code: "conflict", message: "tenant acme already exists")) {
                try await repository.createTenant(id: TenantID("acme")!, name: "Other")
            }
        }
    }

    @Test("a device of a missing tenant is a 404 that says to create the tenant")
    func deviceOfMissingTenant() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            do {
                _ = try await repository.createDevice(tenant: TenantID("ghost")!, name: "van", group: "default", grade: 0)
                Issue.record("a device was created for a tenant that does not exist")
            } catch let error as APIError {
                #expect(error.status == 404)
                #expect(error.message.contains("ghost"))
            }
        }
    }

    @Test("the API key is stored only as its SHA-256")
    func keyStoredHashed() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let setup = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            #expect(DeviceAPIKey.looksValid(setup.apiKey))
            let secret = String(setup.apiKey.dropFirst(4))
            let tableText = try await client.value("""
                SELECT string_agg(d::text, ' ') || (SELECT string_agg(k::text, ' ') FROM device_api_keys k) FROM devices d
                """, as: String.self)
            #expect(!tableText.contains(setup.apiKey))
            #expect(!tableText.contains(secret), "the key's random part appears in the devices or keys table")
            let matches = try await client.value("""
                SELECT key_hash = sha256(convert_to(\(setup.apiKey), 'UTF8')) FROM device_api_keys WHERE device_id = \(setup.device.id)
                """, as: Bool.self)
            #expect(matches)
        }
    }

    @Test("authenticateDevice finds the device by its key and nothing with another key")
    func authenticate() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let setup = try await TestTenant.create(repository)
            let (second, secondKey) = try await repository.createDevice(tenant: setup.tenant, name: "van-2", group: "north", grade: 7)

            #expect(try await repository.authenticateDevice(apiKey: setup.apiKey) == setup.device)
            #expect(try await repository.authenticateDevice(apiKey: secondKey) == second)
            #expect(second.group == "north" && second.grade == 7 && second.tenant == setup.tenant)

            let unknown = DeviceAPIKey.generate()
            #expect(try await repository.authenticateDevice(apiKey: unknown) == nil)
            var flipped = Array(setup.apiKey)
            flipped[flipped.count - 1] = flipped.last == "0" ? "1" : "0"
            #expect(try await repository.authenticateDevice(apiKey: String(flipped)) == nil)
            #expect(try await repository.authenticateDevice(apiKey: "") == nil)
            #expect(try await repository.authenticateDevice(apiKey: setup.apiKey.uppercased()) == nil)
            #expect(try await repository.authenticateDevice(apiKey: setup.apiKey + "0") == nil)
        }
    }

    @Test("generated keys have the pgt_ shape and differ")
    func keyShape() {
        let keys = (0..<50).map { _ in DeviceAPIKey.generate() }
        #expect(keys.allSatisfy(DeviceAPIKey.looksValid))
        #expect(Set(keys).count == keys.count)
        #expect(!DeviceAPIKey.looksValid("pgt_" + String(repeating: "g", count: 64)))
        #expect(DeviceAPIKey.hash("pgt_x").count == 32)
    }
}
