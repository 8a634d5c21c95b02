import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The rules of the node's key memory on their own; the server tests show the rings and the
/// listener driving them.
@Suite("DeviceKeyCache")
struct DeviceKeyCacheTests {
    let acme = DeviceIdentity(id: UUID(), tenant: TenantID("acme")!, name: "van", group: "default", grade: 0)
    let globex = DeviceIdentity(id: UUID(), tenant: TenantID("globex")!, name: "truck", group: "default", grade: 0)
    let keyA: [UInt8] = [1, 2, 3]
    let keyG: [UInt8] = [4, 5, 6]

    @Test("nothing is remembered or served while the listener is not listening")
    func notListening() {
        let cache = DeviceKeyCache()
        cache.remember(acme, forKeyHash: keyA, ticket: cache.ticket())
        #expect(cache.count == 0)
        cache.setListening(true)
        cache.remember(acme, forKeyHash: keyA, ticket: cache.ticket())
        #expect(cache.device(forKeyHash: keyA) == acme)
        cache.setListening(false)
        #expect(cache.device(forKeyHash: keyA) == nil)
        cache.setListening(true)
        #expect(cache.device(forKeyHash: keyA) == nil, "a reconnect forgets what may have missed a ring")
    }

    @Test("a lookup that overlapped a change does not store its answer")
    func overlappingChange() {
        let cache = DeviceKeyCache()
        cache.setListening(true)
        let ticket = cache.ticket()
        cache.forget(tenant: acme.tenant)
        cache.remember(acme, forKeyHash: keyA, ticket: ticket)
        #expect(cache.device(forKeyHash: keyA) == nil)
        cache.remember(globex, forKeyHash: keyG, ticket: ticket)
        #expect(cache.device(forKeyHash: keyG) == globex, "another tenant's change does not hold up globex")
        let beforeTruncate = cache.ticket()
        cache.forgetAll()
        #expect(cache.count == 0)
        cache.remember(globex, forKeyHash: keyG, ticket: beforeTruncate)
        #expect(cache.count == 0, "a lookup that overlapped a forget-all does not store")
        let lostConnection = cache.ticket()
        cache.setListening(false)
        cache.setListening(true)
        cache.remember(acme, forKeyHash: keyA, ticket: lostConnection)
        #expect(cache.count == 0)
    }

    @Test("a change forgets its tenant's keys only")
    func forgetTenant() {
        let cache = DeviceKeyCache()
        cache.setListening(true)
        cache.remember(acme, forKeyHash: keyA, ticket: cache.ticket())
        cache.remember(globex, forKeyHash: keyG, ticket: cache.ticket())
        cache.forget(tenant: acme.tenant)
        #expect(cache.device(forKeyHash: keyA) == nil)
        #expect(cache.device(forKeyHash: keyG) == globex)
    }

    @Test("entries expire after their lifetime; past its capacity the cache starts over")
    func lifetimeAndCapacity() async throws {
        let short = DeviceKeyCache(lifetime: .seconds(2))
        short.setListening(true)
        short.remember(acme, forKeyHash: keyA, ticket: short.ticket())
        #expect(short.device(forKeyHash: keyA) == acme)
        try await Task.sleep(for: .milliseconds(2_100))
        #expect(short.device(forKeyHash: keyA) == nil)

        let small = DeviceKeyCache(capacity: 2)
        small.setListening(true)
        for key: UInt8 in 0..<3 { small.remember(acme, forKeyHash: [key], ticket: small.ticket()) }
        #expect(small.count == 1)
        #expect(small.device(forKeyHash: [2]) == acme)
    }

    @Test("the repository's own key and device changes forget the tenant before they return, with no ring")
    func ownChanges() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            // No listener here: only the repository's own forgetting can make these pass.
            let cache = DeviceKeyCache()
            cache.setListening(true)
            let repository = TrackingRepository(client: client, logger: TestCluster.logger, deviceKeys: cache)
            let acme = try await TestTenant.create(repository, id: "acme")
            #expect(try await repository.authenticateDevice(apiKey: acme.apiKey) == acme.device)
            #expect(cache.count == 1)

            let (_, rotated) = try #require(try await repository.createKey(device: acme.device.id, tenant: acme.tenant, revokeOthers: true))
            #expect(try await repository.authenticateDevice(apiKey: acme.apiKey) == nil, "rotated out")
            #expect(try await repository.authenticateDevice(apiKey: rotated) == acme.device)

            let keyID = try #require(try await repository.keys(device: acme.device.id, tenant: acme.tenant)?.first?.id)
            #expect(try await repository.revokeKey(keyID, device: acme.device.id, tenant: acme.tenant) == true)
            #expect(try await repository.authenticateDevice(apiKey: rotated) == nil, "revoked")

            let (_, third) = try #require(try await repository.createKey(device: acme.device.id, tenant: acme.tenant, revokeOthers: false))
            #expect(try await repository.authenticateDevice(apiKey: third) == acme.device)
            #expect(try await repository.deleteDevice(acme.device.id, tenant: acme.tenant))
            #expect(try await repository.authenticateDevice(apiKey: third) == nil, "deleted")
            #expect(cache.count == 0)
        }
    }
}
