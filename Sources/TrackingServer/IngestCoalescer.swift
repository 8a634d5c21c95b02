import Foundation
import Synchronization
import TrackingCore
import TrackingStore

/// Group commit for `POST /api/v1/locations`. A tenant's writes are serialised by the database
/// anyway (the positions trigger holds the tenant's change-log head until commit, so seqs
/// commit in order); the POSTs of a tenant that arrive while its previous insert is in flight
/// are written together in one statement and one commit when it returns. Under load a
/// tenant's fixes cost one round trip, one commit (one WAL flush) and one NOTIFY per group
/// instead of one each, and requests stop holding pool connections while they wait on the
/// head lock. An idle tenant's POST goes straight through, alone. Each request is answered
/// only after the commit that stored it; if a group fails, each request of it is retried alone
/// so that only a bad request fails.
final class IngestCoalescer: Sendable {
    struct Pending: Sendable {
        let device: UUID
        let positions: [ValidatedPosition]
        let continuation: CheckedContinuation<IngestOutcome, any Error>
    }

    private let queues = Mutex<[TenantID: [Pending]]>([:])
    let repository: TrackingRepository
    /// Rows per statement (a single larger request still goes alone).
    let maxRows: Int

    init(repository: TrackingRepository, maxRows: Int = PositionValidator.maxBatchSize) {
        self.repository = repository
        self.maxRows = maxRows
    }

    func insert(_ positions: [ValidatedPosition], device: DeviceIdentity) async throws -> IngestOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let pending = Pending(device: device.id, positions: positions, continuation: continuation)
            // A tenant present in `queues` has a writer running; it takes what is queued next.
            let startWriter = queues.withLock { queues -> Bool in
                if queues[device.tenant] != nil {
                    queues[device.tenant]!.append(pending)
                    return false
                }
                queues[device.tenant] = []
                return true
            }
            if startWriter {
                let tenant = device.tenant
                Task { await self.write(first: [pending], tenant: tenant) }
            }
        }
    }

    /// Writes `first`, then whatever queued meanwhile, until the tenant's queue is empty.
    private func write(first: [Pending], tenant: TenantID) async {
        var group = first
        while !group.isEmpty {
            await store(group, tenant: tenant)
            group = queues.withLock { queues -> [Pending] in
                let queued = queues[tenant] ?? []
                guard !queued.isEmpty else {
                    queues[tenant] = nil  // the writer ends; the next POST starts one
                    return []
                }
                var rows = 0
                var count = 0
                for pending in queued {
                    if count > 0 && rows + pending.positions.count > maxRows { break }
                    rows += pending.positions.count
                    count += 1
                }
                queues[tenant] = Array(queued.dropFirst(count))
                return Array(queued.prefix(count))
            }
        }
    }

    private func store(_ group: [Pending], tenant: TenantID) async {
        do {
            let outcomes = try await repository.insertPositionGroups(group.map { ($0.device, $0.positions) }, tenant: tenant)
            for (pending, outcome) in zip(group, outcomes) { pending.continuation.resume(returning: outcome) }
        } catch {
            guard group.count > 1 else {
                group[0].continuation.resume(throwing: error)
                return
            }
            // The failed statement wrote nothing: find the request that failed it.
            for pending in group {
                do {
                    pending.continuation.resume(returning: try await repository.insertPositionGroups(
                        [(pending.device, pending.positions)], tenant: tenant)[0])
                } catch {
                    pending.continuation.resume(throwing: error)
                }
            }
        }
    }
}
