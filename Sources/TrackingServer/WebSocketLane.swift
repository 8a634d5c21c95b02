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
/// task then waits for the client, and the mailbox's bound applies as before).
///
/// A signal's frames are written together (a 1,000-fix batch can pass NIO's write-buffer mark
/// by one batch); the next signal finds the socket not writable and goes to the task.
///
/// One writer at a time, in the order the session decided the frames: the task writes only
/// while the state is not parked, the lane only while it is parked *and* every write the task
/// made before parking has reached the channel. The task's writes travel to the event loop as
/// queued jobs; an event whose job was queued before them could otherwise run after the task
/// parked and overtake them (the simulator saw one event out of order in 2.4 million). So
/// parking queues a job of its own behind the task's writes, and only that job lets the lane
/// write; an event that comes earlier is handed to the task.
final class WebSocketLane<State: Sendable>: MailboxConsumer, Sendable {
    private struct Inner {
        /// The session's state while its task waits; nil while the task holds it.
        var parked: State?
        /// The task's writes before the current parking have all reached the channel.
        var writable = false
        /// Counts parkings, so a late job of an earlier one does nothing.
        var parking = 0
        /// The state the lane handed back with a signal, until the task takes it.
        var returned: State?
        /// Signals yielded to the task and not yet taken.
        var queued = 0
    }

    /// The signals only the task handles.
    let signals: AsyncStream<SessionSignal>
    private let continuation: AsyncStream<SessionSignal>.Continuation
    private let inner = Mutex(Inner())
    private let channel: any Channel
    /// Raised once a Close frame has been written: from then on every event goes to the task.
    private let closeSent: CloseFrameWatch.Flag?
    /// The frames a signal makes on the socket, advancing the state; nil when only the task
    /// may handle it.
    private let frames: @Sendable (SessionSignal, inout State) -> [WebSocketFrame]?

    init(channel: any Channel, closeSent: CloseFrameWatch.Flag? = nil,
         frames: @escaping @Sendable (SessionSignal, inout State) -> [WebSocketFrame]?) {
        self.channel = channel
        self.closeSent = closeSent
        self.frames = frames
        // Unbounded here: the mailbox bounds what is pushed and not yet taken.
        (signals, continuation) = AsyncStream.makeStream(of: SessionSignal.self)
    }

    /// The task is about to wait: it parks `state` unless signals are already queued for it.
    /// Returns whether it did; the task then takes the state back with `takeBack()` after
    /// its next signal (or the end of `signals`).
    func park(_ state: State) -> Bool {
        let parking: Int? = inner.withLock { inner in
            guard inner.queued == 0 else { return nil }
            inner.parked = state
            inner.writable = false
            inner.parking += 1
            return inner.parking
        }
        guard let parking else { return false }
        // Behind the task's writes on the event loop (jobs queued by one task run in order).
        channel.eventLoop.execute {
            self.inner.withLock { inner in
                if inner.parking == parking, inner.parked != nil { inner.writable = true }
            }
        }
        return true
    }

    /// The state as the lane left it.
    func takeBack() -> State {
        inner.withLock { inner in
            guard let state = inner.returned.take() ?? inner.parked.take() else {
                preconditionFailure("takeBack() without park(_:)")
            }
            inner.writable = false
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
        let written: [WebSocketFrame]? = inner.withLock { inner in
            if var state = inner.parked.take() {
                if inner.writable, channel.isWritable, closeSent?.isRaised != true, let written = frames(signal, &state) {
                    inner.parked = state
                    return written
                }
                inner.returned = state
                inner.writable = false
            }
            inner.queued += 1
            continuation.yield(signal)
            return nil
        }
        guard let written else { return }
        mailbox.took(signal)
        guard !written.isEmpty else { return }
        for frame in written { channel.write(frame, promise: nil) }
        channel.flush()
    }
}
