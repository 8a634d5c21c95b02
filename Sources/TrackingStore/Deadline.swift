import Synchronization

/// The operation did not finish within its deadline.
public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let what: String
    public var description: String { "\(what) did not finish in time" }
}

/// Runs `operation` in a task of its own and returns its result, or throws `DeadlineExceeded`
/// after `timeout` *without waiting for it*.
///
/// For calls into a connection that may never complete once the connection is closing (a
/// query sent just as the socket dies): awaiting such a call in a task group would make the
/// group, and everything waiting on it, wait forever, whatever its cancellation. The abandoned
/// task is cancelled and left to finish on its own.
public func withDeadline<T: Sendable>(
    _ timeout: Duration, _ what: String, _ operation: @escaping @Sendable () async throws -> T
) async throws -> T {
    let race = DeadlineRace<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            race.start(continuation)
            let work = Task {
                let result: Result<T, any Error>
                do { result = .success(try await operation()) } catch { result = .failure(error) }
                race.finish(result)
            }
            race.setWork(work)
            Task {
                try? await Task.sleep(for: timeout)
                if race.finish(.failure(DeadlineExceeded(what: what))) { work.cancel() }
            }
        }
    } onCancel: {
        if race.finish(.failure(CancellationError())) { race.cancelWork() }
    }
}

/// Whoever finishes first (the operation, the deadline, or cancellation) resumes the caller, once.
private final class DeadlineRace<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, finished: Bool, work: Task<Void, Never>?)>((nil, false, nil))

    func start(_ continuation: CheckedContinuation<T, any Error>) {
        let alreadyCancelled = state.withLock { state -> Bool in
            if state.finished { return true }
            state.continuation = continuation
            return false
        }
        if alreadyCancelled { continuation.resume(throwing: CancellationError()) }
    }

    func setWork(_ task: Task<Void, Never>) {
        state.withLock { $0.work = task }
    }

    func cancelWork() {
        state.withLock { $0.work }?.cancel()
    }

    /// Resumes the caller with `result` unless someone already did; true if this call did.
    @discardableResult
    func finish(_ result: Result<T, any Error>) -> Bool {
        let continuation = state.withLock { state -> CheckedContinuation<T, any Error>? in
            guard !state.finished else { return nil }
            state.finished = true
            defer { state.continuation = nil }
            return state.continuation
        }
        continuation?.resume(with: result)
        return continuation != nil
    }
}
