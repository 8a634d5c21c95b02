import NIOCore
import NIOWebSocket
import Synchronization

/// The live lane of a WebSocket session: while the session's task waits for its next signal
/// with nothing queued, it parks its state here, and the events the hub pushes are written on
/// the socket's event loop without waking the task (as an SSE stream's are, see
/// `StreamConnection`). Under the reference load a WebSocket delivery cost about 40 % more
/// server CPU than an SSE one: a task wake-up and an async write per event.
///
/// Anything else goes to the task, with the state handed back, through `signals`, in the
/// order the signals arrived: client messages, heartbeats, scope rechecks, a status event on
/// a trip's socket (it may end the socket), and events while the socket is not writable (the
/// task then waits for the client, and the mailbox's bound applies as before). One writer at a
/// time: the task writes only while the state is not parked, the lane only while it is, so
/// frames go out in the order the session decided them.
final class WebSocketLane: MailboxConsumer, Sendable {
    private struct Inner {
        /// The session's state while its task waits; nil while the task holds it.
        var parked: WebSocketSession.State?
        /// The state the lane handed back with a signal, until the task takes it.
        var returned: WebSocketSession.State?
        /// Signals yielded to the task and not yet taken.
        var queued = 0
    }

    /// The signals only the task handles.
    let signals: AsyncStream<SessionSignal>
    private let continuation: AsyncStream<SessionSignal>.Continuation
    private let inner = Mutex(Inner())
    private let channel: any Channel
    private let session: WebSocketSession

    init(channel: any Channel, session: WebSocketSession) {
        self.channel = channel
        self.session = session
        // Unbounded here: the mailbox bounds what is pushed and not yet taken.
        (signals, continuation) = AsyncStream.makeStream(of: SessionSignal.self)
    }

    /// The task is about to wait: it parks `state` unless signals are already queued for it.
    /// Returns whether it did; the task then takes the state back with `takeBack()` after
    /// its next signal (or the end of `signals`).
    func park(_ state: WebSocketSession.State) -> Bool {
        inner.withLock { inner in
            guard inner.queued == 0 else { return false }
            inner.parked = state
            return true
        }
    }

    /// The state as the lane left it.
    func takeBack() -> WebSocketSession.State {
        inner.withLock { inner in
            guard let state = inner.returned.take() ?? inner.parked.take() else {
                preconditionFailure("takeBack() without park(_:)")
            }
            return state
        }
    }

    /// The task took one signal from `signals`.
    func took() {
        inner.withLock { $0.queued -= 1 }
    }

    // MARK: MailboxConsumer

    func mailbox(_ mailbox: Mailbox, received signal: SessionSignal) {
        channel.eventLoop.execute { self.handle(signal, from: mailbox) }
    }

    func mailboxClosed(_ mailbox: Mailbox) {
        // After the signals pushed before the close.
        channel.eventLoop.execute {
            self.inner.withLock { inner in
                if let state = inner.parked.take() { inner.returned = state }
            }
            self.continuation.finish()
        }
    }

    /// On the event loop, in push order.
    private func handle(_ signal: SessionSignal, from mailbox: Mailbox) {
        let frames: [WebSocketFrame]? = inner.withLock { inner in
            if var state = inner.parked.take() {
                if channel.isWritable, let frames = session.liveFrames(for: signal, state: &state) {
                    inner.parked = state
                    return frames
                }
                inner.returned = state
            }
            inner.queued += 1
            continuation.yield(signal)
            return nil
        }
        guard let frames else { return }
        mailbox.took(signal)
        guard !frames.isEmpty else { return }
        for frame in frames { channel.write(frame, promise: nil) }
        channel.flush()
    }
}
