import ServiceLifecycle
import Synchronization

/// Counts the SSE streams served on the event loop (see `StreamFirstChannel`), which no
/// server task waits for. As a service it keeps the node's shutdown from going past it until
/// every such stream has closed and let go of its subscription: it is added after the hub, so
/// it shuts down after the HTTP server (which ends the streams) and before the hub, the
/// listener and the database pool they use.
final class OpenStreams: Service, Sendable {
    private let state = Mutex<(count: Int, waiters: [CheckedContinuation<Void, Never>])>((0, []))

    var count: Int { state.withLock { $0.count } }

    func enter() {
        state.withLock { $0.count += 1 }
    }

    func leave() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.count -= 1
            guard state.count == 0 else { return [] }
            defer { state.waiters.removeAll() }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    func run() async throws {
        try? await gracefulShutdown()
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if state.count == 0 { return true }
                state.waiters.append(waiter)
                return false
            }
            if done { waiter.resume() }
        }
    }
}
