import AsyncHTTPClient
import NIOHTTP1
import Synchronization
import TrackingCore

/// Why a wait on a stream gave up: the stream ended, or nothing arrived in time.
struct SSEClientError: Error, CustomStringConvertible {
    let description: String
}

/// What the reading task of one SSE response has seen so far, with bounded waits on it.
///
/// The reading task appends; a test takes. Every wait has a deadline: a timer wakes the waiter
/// when it passes, so a test never hangs on a silent stream.
final class SSEInbox: Sendable {
    struct State {
        var head: (status: HTTPResponseStatus, headers: HTTPHeaders, body: String)?
        var events: [SSEParser.Event] = []
        var taken = 0
        var comments = 0
        var end: String?
        var version: UInt64 = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func received(status: HTTPResponseStatus, headers: HTTPHeaders, errorBody: String = "") {
        change { $0.head = (status, headers, errorBody) }
    }

    func append(_ events: [SSEParser.Event], comments: Int) {
        change { state in
            state.events += events
            state.comments = comments
        }
    }

    func finish(_ reason: String) {
        change { state in
            if state.end == nil { state.end = reason }
        }
    }

    var commentCount: Int { state.withLock { $0.comments } }
    var responseHeaders: HTTPHeaders { state.withLock { $0.head?.headers ?? [:] } }
    var endReason: String? { state.withLock { $0.end } }

    /// Events received but not yet taken.
    var untaken: [SSEParser.Event] {
        state.withLock { Array($0.events[$0.taken...]) }
    }

    /// The next event not yet taken.
    func next(timeout: Duration, waitingFor what: String) async throws -> SSEParser.Event {
        try await wait(timeout: timeout, waitingFor: what) { state in
            guard state.taken < state.events.count else { return nil }
            defer { state.taken += 1 }
            return state.events[state.taken]
        }
    }

    /// Waits until `probe` returns a value. Throws when the stream ended first (unless the probe
    /// still finds its value) or when `timeout` passes.
    func wait<T>(timeout: Duration, waitingFor what: String, _ probe: (inout State) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        let timer = Task { [weak self] in
            try? await Task.sleep(until: deadline, clock: .continuous)
            self?.change { _ in }
        }
        defer { timer.cancel() }
        while true {
            let (value, end, version) = state.withLock { state in (probe(&state), state.end, state.version) }
            if let value { return value }
            if let end { throw SSEClientError(description: "the stream ended (\(end)) while waiting for \(what)") }
            if ContinuousClock.now >= deadline {
                throw SSEClientError(description: "nothing arrived within \(timeout) while waiting for \(what)")
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let changed = state.withLock { state -> Bool in
                    guard state.version == version else { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if changed { continuation.resume() }
            }
        }
    }

    private func change(_ update: (inout State) -> Void) {
        let waiters = state.withLock { state in
            update(&state)
            state.version &+= 1
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
