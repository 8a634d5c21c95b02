import Foundation
import Testing
import TrackingCore
import TrackingStore

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
        cache.forget(tenant: globex.tenant)  // any change, even of another tenant
        cache.remember(acme, forKeyHash: keyA, ticket: ticket)
        #expect(cache.device(forKeyHash: keyA) == nil)
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
        let short = DeviceKeyCache(lifetime: .milliseconds(50))
        short.setListening(true)
        short.remember(acme, forKeyHash: keyA, ticket: short.ticket())
        #expect(short.device(forKeyHash: keyA) == acme)
        try await Task.sleep(for: .milliseconds(60))
        #expect(short.device(forKeyHash: keyA) == nil)

        let small = DeviceKeyCache(capacity: 2)
        small.setListening(true)
        for key: UInt8 in 0..<3 { small.remember(acme, forKeyHash: [key], ticket: small.ticket()) }
        #expect(small.count == 1)
        #expect(small.device(forKeyHash: [2]) == acme)
    }
}
