import Synchronization
import TrackingCore
import TrackingStore

/// Shares snapshot queries among callers that arrive together: 500 viewers connecting at once
/// cause a handful of queries, not 500.
///
/// A caller may only share a query that started after `notBefore` (for a stream: the moment
/// its subscription was live). Such a snapshot holds everything committed before the caller
/// could miss it from the live feed, so sharing never loses an event; a query that started
/// earlier is not shared and the caller starts (or joins) a newer one.
public final class SnapshotCoalescer: Sendable {
    private struct Flight {
        let id: UInt64
        let started: ContinuousClock.Instant
        let task: Task<Snapshot?, any Error>
    }

    private struct State {
        var flights: [BusTopic: Flight] = [:]
        var nextID: UInt64 = 0
        var queries = 0
    }

    private let state = Mutex(State())
    let repository: TrackingRepository

    public init(repository: TrackingRepository) {
        self.repository = repository
    }

    /// How many snapshot queries ran (for tests and health).
    public var queriesRun: Int { state.withLock { $0.queries } }

    public func snapshot(of topic: BusTopic, notBefore: ContinuousClock.Instant) async throws -> Snapshot? {
        let repository = self.repository
        let flight = state.withLock { state -> Flight in
            if let flight = state.flights[topic], flight.started >= notBefore { return flight }
            state.nextID += 1
            state.queries += 1
            // Recorded before the query is sent, so the query itself starts no earlier.
            let flight = Flight(id: state.nextID, started: .now, task: Task { try await repository.snapshot(of: topic) })
            state.flights[topic] = flight
            return flight
        }
        defer {
            // A finished flight is no use to later callers (they became live after it started).
            state.withLock { state in
                if state.flights[topic]?.id == flight.id { state.flights[topic] = nil }
            }
        }
        return try await flight.task.value
    }
}
