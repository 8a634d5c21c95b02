import Synchronization

/// What happens to an SSE client that overflowed its buffer: the first time a `reset` (a fresh
/// snapshot); an overflow again within `window` of that reset closes the stream, and so does a
/// reset that could not be written within `window` (the client reads nothing at all). A client
/// that stops reading for good was otherwise reset after reset, each snapshot queued behind the
/// last in a socket it never drains, megabytes held for it for ever. Closed, the client
/// reconnects with Last-Event-ID and resumes from the log without loss, as a WebSocket client
/// does after close code 1013.
///
/// Shared by the stream's task or event-loop handler, which decides at each overflow it handles,
/// and (on a keep-alive connection, where that task may be stuck in a write) the mailbox's
/// overflow hook, which can close the connection under it.
final class SlowConsumerRule: Sendable {
    static let window: Duration = .seconds(60)

    private struct State {
        var lastReset: ContinuousClock.Instant?
        /// An overflow was seen and its reset is not written yet.
        var resetPending = false
    }

    private let state = Mutex(State())

    /// The session handles an overflow: true to reset the stream, false to close it.
    func resetAllowed(now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            if let last = state.lastReset, now - last < Self.window { return false }
            state.lastReset = now
            state.resetPending = true
            return true
        }
    }

    /// The reset's snapshot is written: the client reads again.
    func resetWritten() {
        state.withLock { $0.resetPending = false }
    }

    /// The hub saw an overflow (the session may not run for a while): true when the stream must
    /// be closed now, because it overflowed again within the window of its last reset.
    func overflowSeen(now: ContinuousClock.Instant = .now) -> Bool {
        state.withLock { state in
            if let last = state.lastReset, now - last < Self.window { return true }
            state.resetPending = true
            return false
        }
    }

    /// Checked `window` after an overflow: the reset it called for was never written.
    var resetStillPending: Bool { state.withLock { $0.resetPending } }
}
