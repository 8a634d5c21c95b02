import Foundation
import Synchronization
import TrackingCore
import TrackingStore

/// Group commit for `POST /api/v1/locations`, across tenants. At most `writers` inserts are in
/// flight; the POSTs that arrive meanwhile, of any tenant, are written together in one
/// statement and one commit when a writer is free. PostgreSQL serialises the commits of every
/// transaction that NOTIFYs (a database-wide lock held through the commit's WAL flush), so more
/// concurrent inserts would only queue there, each paying its own statement, trigger run,
/// flush and NOTIFY; a group pays them once, and the positions trigger works on it set-based
/// (SQL/030). An idle server's POST goes straight through, alone.
///
/// A writer beyond the first runs only while `rowsPerExtraWriter` rows wait for each extra
/// one: a small group costs PostgreSQL about as much as a large one (the statement, the
/// trigger's statements, the commit), so many small POSTs are cheapest through one writer in
/// ever larger groups, while large batches gain from a second statement running as the first
/// one's commit is flushed. Measured on one cluster, the same day (README, Performance): under
/// the reference load two writers always on took 87–92 % of the machine, this rule 77–81 %,
/// with end-to-end p50 8.3–13.6 ms against 6.8–7.8 ms in alternating 30 s runs; `bench`'s
/// single-fix ingest went from 3,308 to 3,849 positions/s, its 100-fix batches from 27,990
/// to 26,064 (one writer always: 4,310 and 23,125).
///
/// Each request is answered only after the commit that stored it; if a group fails, each
/// request of it is retried alone so that only a bad request fails.
final class IngestCoalescer: Sendable {
    struct Pending: Sendable {
        let group: PositionGroup
        let continuation: CheckedContinuation<IngestOutcome, any Error>
    }

    private struct State {
        var queue: [Pending] = []
        /// Positions in `queue`.
        var queuedRows = 0
        var writing = 0
        var stats = Stats()
    }

    /// What the coalescer has written so far.
    struct Stats: Sendable, Equatable {
        /// Statements (groups) written.
        var groups = 0
        /// The most tenants one group held.
        var widestGroup = 0
        /// The most writers that ran at once.
        var mostWriters = 0
    }

    var stats: Stats { state.withLock { $0.stats } }

    private let state = Mutex(State())
    let repository: TrackingRepository
    /// Rows per statement (a single larger request still goes alone).
    let maxRows: Int
    /// Inserts in flight at most.
    let writers: Int
    /// Rows that must wait for each writer beyond the first to run.
    let rowsPerExtraWriter: Int

    init(repository: TrackingRepository, maxRows: Int = PositionValidator.maxBatchSize, writers: Int = 2,
         rowsPerExtraWriter: Int = 64) {
        self.repository = repository
        self.maxRows = maxRows
        self.writers = writers
        self.rowsPerExtraWriter = rowsPerExtraWriter
    }

    /// Writers the queue justifies now: one, and one more for each `rowsPerExtraWriter` rows waiting.
    private func writersWanted(_ state: State) -> Int {
        min(writers, 1 + state.queuedRows / max(rowsPerExtraWriter, 1))
    }

    func insert(_ positions: [ValidatedPosition], device: DeviceIdentity) async throws -> IngestOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let pending = Pending(group: PositionGroup(tenant: device.tenant, device: device.id, positions: positions),
                                  continuation: continuation)
            let startWriter = state.withLock { state -> Bool in
                state.queue.append(pending)
                state.queuedRows += positions.count
                guard state.writing < writersWanted(state) else { return false }  // a running writer takes it next
                state.writing += 1
                state.stats.mostWriters = max(state.stats.mostWriters, state.writing)
                return true
            }
            if startWriter {
                Task { await self.write() }
            }
        }
    }

    /// Writes what is queued, a group at a time, until the queue is empty.
    private func write() async {
        while true {
            let group = state.withLock { state -> [Pending] in
                // An extra writer ends when the queue no longer justifies it; the last one when
                // the queue is empty (the next POST starts one).
                guard !state.queue.isEmpty, state.writing <= writersWanted(state) else {
                    state.writing -= 1
                    return []
                }
                var rows = 0
                var count = 0
                for pending in state.queue {
                    if count > 0 && rows + pending.group.positions.count > maxRows { break }
                    rows += pending.group.positions.count
                    count += 1
                }
                let taken = Array(state.queue.prefix(count))
                state.queue.removeFirst(count)
                state.queuedRows -= rows
                state.stats.groups += 1
                state.stats.widestGroup = max(state.stats.widestGroup, Set(taken.map(\.group.tenant)).count)
                return taken
            }
            guard !group.isEmpty else { return }
            await store(group)
        }
    }

    private func store(_ group: [Pending]) async {
        do {
            let outcomes = try await repository.insertPositionGroups(group.map(\.group))
            for (pending, outcome) in zip(group, outcomes) { pending.continuation.resume(returning: outcome) }
        } catch {
            guard group.count > 1 else {
                group[0].continuation.resume(throwing: error)
                return
            }
            // The failed statement wrote nothing: find the request that failed it.
            for pending in group {
                do {
                    pending.continuation.resume(returning: try await repository.insertPositionGroups([pending.group])[0])
                } catch {
                    pending.continuation.resume(throwing: error)
                }
            }
        }
    }
}
