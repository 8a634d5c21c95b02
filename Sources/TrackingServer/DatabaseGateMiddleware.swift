import Hummingbird
import TrackingCore
import TrackingStore

/// Puts every request but `/health` through the `DatabaseGate`: refused at once (503 with
/// Retry-After) while the database is down or the node is at its in-flight limit; given up on
/// (cancelled, then 503) when the gate goes down while it waits or after the request ceiling.
/// `/health` is not gated: it must say "down" itself, within its own timeout.
struct DatabaseGateMiddleware<Context: RequestContext>: RouterMiddleware {
    let gate: DatabaseGate

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        if request.uri.path.hasPrefix("/health") { return try await next(request, context) }
        guard gate.enter() else {
            throw APIError.unavailable("This node is working on \(gate.settings.maxInFlight) requests already; retry shortly.",
                                       retryAfterSeconds: 1)
        }
        defer { gate.leave() }
        guard !gate.isDown else { throw APIError.databaseUnavailable }
        do {
            return try await bounded(request, context, next)
        } catch where isConnectionLoss(error) {
            gate.suspect()
            throw error
        }
    }

    /// Runs the rest of the chain in a child task beside the gate's give-up signal. When the
    /// signal comes first the child is cancelled (a wait for a pool connection ends at once) and
    /// awaited: a request that finished anyway still gets its own answer, one that did not gets 503.
    private func bounded(_ request: Request, _ context: Context, _ next: (Request, Context) async throws -> Response) async throws -> Response {
        try await withoutActuallyEscaping(next) { next in
            // The chain runs in one task at a time (the child), and the task group ends before
            // `withoutActuallyEscaping` returns, so the closure never outlives this call.
            let chain = UncheckedSendableBox(next)
            return try await withThrowingTaskGroup(of: Response?.self) { group in
                group.addTask { try await chain.value(request, context) }
                group.addTask {
                    await gate.giveUpSignal()
                    return nil
                }
                var gaveUp = false
                while let outcome = try await nextOutcome(of: &group) {
                    switch outcome {
                    case .success(let response?):
                        group.cancelAll()
                        return response
                    case .success(nil):
                        gaveUp = true
                        group.cancelAll()
                    case .failure(let error):
                        group.cancelAll()
                        if gaveUp, error is CancellationError { break }
                        throw error
                    }
                }
                gate.suspect()
                throw gate.isDown ? APIError.databaseUnavailable
                    : APIError.unavailable("The request did not finish within \(gate.settings.requestCeiling); retry shortly.",
                                           retryAfterSeconds: 2)
            }
        }
    }

    private func nextOutcome(of group: inout ThrowingTaskGroup<Response?, any Error>) async throws -> Result<Response?, any Error>? {
        do {
            guard let value = try await group.next() else { return nil }
            return .success(value)
        } catch {
            return .failure(error)
        }
    }
}

/// Carries a value the compiler cannot prove Sendable into a child task that is its only user.
struct UncheckedSendableBox<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}
