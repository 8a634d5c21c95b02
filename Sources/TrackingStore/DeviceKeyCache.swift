import Foundation
import Synchronization
import TrackingCore

/// The node's memory of which device each API key belongs to, so that a device posting every
/// second does not cost a database round trip per POST just to say who it is.
///
/// Under the reference load (`pgtrack simulate --scenario seed`) the key lookup was one of the
/// two statements of every POST: 1,000 lookups/s, each a trip through the pool, PostgreSQL and
/// back onto the request's task.
///
/// It is only as fresh as the database tells it to be:
/// - Entries are served only while the node's listener is LISTENing on `channel`, which
///   triggers on `devices` and `device_api_keys` ring for any update or delete (SQL/041), naming
///   the tenant. A ring forgets that tenant's entries. While the listener is down nothing is
///   served from memory and nothing is remembered, and everything is forgotten when it
///   reconnects, since rings may have been missed.
/// - A lookup remembers its answer only if neither its tenant nor everyone was forgotten
///   while it ran (its `Ticket` against `tenantForgotten` and `allForgotten`), so a key revoked
///   between the read and the store is not put back.
/// - The node's own key and device changes forget their tenant as soon as they commit, before
///   the response, so a client that revokes a key and uses it next gets a 401 at once.
/// - A listener connection that dies silently is noticed by its ping within two ping intervals
///   (~10 s); rings sent meanwhile are lost, so for that long a changed key may still be
///   served. Entries expire after `lifetime` (60 s) whatever happens, which also bounds SQL
///   that changes keys without firing triggers (`session_replication_role = replica`,
///   disabled triggers).
/// Unknown and revoked keys are not remembered: they always ask the database.
public final class DeviceKeyCache: Sendable {
    /// The doorbell channel of key and device changes; the payload is the tenant id.
    public static let channel = "pgtrack_device_keys"

    /// The payload that forgets every tenant (TRUNCATE rings it).
    public static let everyone = "*"

    struct Entry {
        let device: DeviceIdentity
        let stored: ContinuousClock.Instant
    }

    struct State {
        var entries: [[UInt8]: Entry] = [:]
        /// Which remembered keys are each tenant's, so a ring forgets them without a scan.
        var byTenant: [TenantID: Set<[UInt8]>] = [:]
        /// Counts forgets; a ticket holds its value when the lookup began.
        var clock: UInt64 = 0
        /// When each tenant was last forgotten, and when everything was: a lookup that
        /// overlapped either does not store.
        var tenantForgotten: [TenantID: UInt64] = [:]
        var allForgotten: UInt64 = 0
        /// The listener is LISTENing on `channel`.
        var live = false

        mutating func remove(_ hash: [UInt8]) {
            guard let entry = entries.removeValue(forKey: hash) else { return }
            let tenant = entry.device.tenant
            byTenant[tenant]?.remove(hash)
            if byTenant[tenant]?.isEmpty == true { byTenant[tenant] = nil }
        }

        mutating func forgetAll() {
            clock &+= 1
            allForgotten = clock
            tenantForgotten.removeAll()
            entries.removeAll()
            byTenant.removeAll()
        }
    }

    /// A lookup's ticket: when the database read began.
    public struct Ticket: Sendable {
        let clock: UInt64
    }

    let lifetime: Duration
    let capacity: Int
    private let state = Mutex(State())

    public init(lifetime: Duration = .seconds(60), capacity: Int = 100_000) {
        self.lifetime = lifetime
        self.capacity = capacity
    }

    /// The device of a key's hash, if remembered, fresh, and the listener is up.
    public func device(forKeyHash hash: [UInt8]) -> DeviceIdentity? {
        let now = ContinuousClock.now
        return state.withLock { state in
            guard state.live, let entry = state.entries[hash] else { return nil }
            guard now - entry.stored < lifetime else {
                state.remove(hash)
                return nil
            }
            return entry.device
        }
    }

    /// Take before reading the database; hand to `remember`.
    public func ticket() -> Ticket {
        state.withLock { Ticket(clock: $0.clock) }
    }

    /// Remembers what the database said, unless the device's tenant (or everything) was
    /// forgotten since `ticket`, or the listener is down.
    public func remember(_ device: DeviceIdentity, forKeyHash hash: [UInt8], ticket: Ticket) {
        let now = ContinuousClock.now
        state.withLock { state in
            guard state.live, state.allForgotten <= ticket.clock,
                  state.tenantForgotten[device.tenant, default: 0] <= ticket.clock else { return }
            // Past the bound, start over rather than track recency: a rare event at this size.
            if state.entries.count >= capacity, state.entries[hash] == nil {
                state.entries.removeAll(keepingCapacity: true)
                state.byTenant.removeAll()
            }
            state.remove(hash)
            state.entries[hash] = Entry(device: device, stored: now)
            state.byTenant[device.tenant, default: []].insert(hash)
        }
    }

    /// A key or device of `tenant` changed (a ring, or this node's own change).
    public func forget(tenant: TenantID) {
        state.withLock { state in
            state.clock &+= 1
            state.tenantForgotten[tenant] = state.clock
            for hash in state.byTenant.removeValue(forKey: tenant) ?? [] { state.entries[hash] = nil }
        }
    }

    /// A ring for every tenant (TRUNCATE), or one the node cannot read.
    public func forgetAll() {
        state.withLock { $0.forgetAll() }
    }

    /// The listener LISTENs on `channel` (true) or lost its connection (false). Either way
    /// what is remembered may have missed a ring.
    public func setListening(_ listening: Bool) {
        state.withLock { state in
            state.forgetAll()
            state.live = listening
        }
    }

    public var isListening: Bool { state.withLock { $0.live } }

    public var count: Int { state.withLock { $0.entries.count } }
}
