import Logging
import ServiceLifecycle
import Synchronization
import TrackingCore
import TrackingStore

/// Whether this node can reach PostgreSQL, and how much request work it holds meanwhile.
///
/// PostgresNIO's pool makes a request wait for a connection for as long as connecting keeps
/// failing, so with the database stopped every endpoint hung until it came back (52 s in a
/// 45 s outage) and requests piled up (661 in a 6 s one). The gate turns an outage into quick
/// 503s. A lost listener connection, or a request that failed by connection loss, makes it
/// *suspect* the database: it probes with a connection of its own (`probeDatabase`; a stopped
/// server refuses it at once). A slow probe is waited for (a busy machine is no outage); one
/// that fails, or takes longer than `probeTimeout`, puts the gate *down*:
/// requests are refused at once, and the requests already waiting are released to answer 503;
/// it probes again every `probeInterval` and opens at the first probe that succeeds. A
/// suspicion alone refuses nothing: a listener connection killed on purpose does not cost a
/// single request.
///
/// Independently, at most `maxInFlight` requests are worked on at once and none for longer
/// than `requestCeiling`: the bound on in-flight work whatever the database does.
public final class DatabaseGate: Service, Sendable {
    public struct Settings: Sendable {
        public var maxInFlight = 1_024
        public var requestCeiling: Duration = .seconds(30)
        public var probeTimeout: Duration = .seconds(15)
        public var probeInterval: Duration = .seconds(1)
        public init() {}
    }

    private struct State {
        var down = false
        var inFlight = 0
        var nextWaiter: UInt64 = 0
        /// Requests at work, resumed when the gate goes down.
        var waiters: [UInt64: (since: ContinuousClock.Instant, continuation: CheckedContinuation<Void, Never>)] = [:]
    }

    let settings: Settings
    private let probe: @Sendable () async throws -> Void
    private let logger: Logger
    private let state = Mutex(State())
    private let suspicions: AsyncStream<Void>
    private let suspicion: AsyncStream<Void>.Continuation

    init(settings: Settings, logger: Logger, probe: @escaping @Sendable () async throws -> Void) {
        self.settings = settings
        self.logger = logger
        self.probe = probe
        (suspicions, suspicion) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Refusing requests because the last probes failed.
    public var isDown: Bool { state.withLock { $0.down } }

    /// Something looked like the database went away: probe it (once, however many say so).
    func suspect() {
        suspicion.yield()
    }

    /// Counts a request in; false when `maxInFlight` are already at work.
    func enter() -> Bool {
        state.withLock { state in
            guard state.inFlight < settings.maxInFlight else { return false }
            state.inFlight += 1
            return true
        }
    }

    func leave() {
        state.withLock { $0.inFlight -= 1 }
    }

    /// Returns when the gate goes down, when the request has been at work for `requestCeiling`
    /// (a sweep once a second looks), or when the calling task is cancelled: the signal to give
    /// up on a request.
    func giveUpSignal() async {
        let id = state.withLock { state -> UInt64 in
            state.nextWaiter += 1
            return state.nextWaiter
        }
        let since = ContinuousClock.now
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let resumeNow = state.withLock { state -> Bool in
                    if state.down || Task.isCancelled { return true }
                    state.waiters[id] = (since, continuation)
                    return false
                }
                if resumeNow { continuation.resume() }
            }
        } onCancel: {
            state.withLock { $0.waiters.removeValue(forKey: id) }?.continuation.resume()
        }
    }

    private func releaseExpired() {
        let deadline = ContinuousClock.now - settings.requestCeiling
        let expired = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            let ids = state.waiters.filter { $0.value.since <= deadline }.keys
            return ids.compactMap { state.waiters.removeValue(forKey: $0)?.continuation }
        }
        for waiter in expired { waiter.resume() }
    }

    // MARK: Probing

    public func run() async throws {
        await cancelWhenGracefulShutdown {
            await withTaskGroup(of: Void.self) { group in
                group.addTask {
                    for await _ in self.suspicions {
                        await self.probeUntilReachable()
                    }
                }
                group.addTask {
                    while (try? await Task.sleep(for: .seconds(1))) != nil {
                        self.releaseExpired()
                    }
                }
                await group.next()
                group.cancelAll()
            }
        }
    }

    private func probeUntilReachable() async {
        while !Task.isCancelled {
            do {
                try await withDeadline(settings.probeTimeout, "the database probe", probe)
                let wasDown = state.withLock { state -> Bool in
                    defer { state.down = false }
                    return state.down
                }
                if wasDown { logger.notice("database reachable again; accepting requests") }
                return
            } catch {
                let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                    if !state.down { logger.error("database unreachable; answering 503 until a probe succeeds: \(describeDatabaseError(error))") }
                    state.down = true
                    defer { state.waiters = [:] }
                    return state.waiters.values.map(\.continuation)
                }
                for waiter in waiters { waiter.resume() }
            }
            try? await Task.sleep(for: settings.probeInterval)
        }
    }
}
