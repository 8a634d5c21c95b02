import HTTPTypes
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypesHTTP1
import TrackingCore

/// An SSE stream that has a connection of its own (see `StreamFirstChannel`), as a channel
/// handler: it passes the request bytes to the HTTP decoder behind it until the head is read,
/// and once `EventLoopStreams` has opened the stream it writes the live events on the event loop,
/// as the fan-out hub pushes them into its mailbox.
///
/// No task waits while the stream is idle. A Swift task keeps the stack of the deepest call it
/// ever made for as long as it lives (~4 KB for a stream's loop, ~30 KB for Hummingbird's
/// request chain); an idle stream here is its channel, this handler and its mailbox. Only a
/// scope re-read and a slow-consumer reset, which query the database, run in a short task, and
/// signals queue meanwhile.
///
/// Sends what the task-driven `StreamSession.live` sends, with the same bound: a signal counts
/// against the mailbox until it is written, so a client that stops reading overflows its
/// mailbox and gets a reset, and nothing upstream waits for it.
///
/// All state is confined to the channel's event loop; the mailbox callbacks hop onto it.
final class StreamConnection: ChannelInboundHandler, MailboxConsumer, @unchecked Sendable {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer
    typealias OutboundOut = HTTPServerResponsePart

    private enum Phase {
        /// The HTTP decoder behind this handler is reading the request head.
        case readingHead
        /// `EventLoopStreams` is authenticating and writing the opening; signals queue.
        case opening
        case live
        /// The socket is full: signals queue (still counted by the mailbox) until it drains.
        case blocked
        /// A scope re-read or a reset runs in a task; signals queue.
        case working
        case finished
    }

    private enum Work { case recheck, reset }

    private enum Queued {
        case signal(SessionSignal)
        case closed
    }

    private let eventLoop: any EventLoop
    private let logger: Logger
    private var phase = Phase.readingHead
    private var head: EventLoopPromise<StreamRequest>?
    private var context: ChannelHandlerContext?
    private var session: StreamSession?
    private var progress: StreamSession.Progress?
    private var queue: [(mailbox: Mailbox, item: Queued)] = []
    /// The client closed its sending side while the stream was opening.
    private var inputClosed = false
    /// A heartbeat or scope re-read is already queued: more of them add nothing (they carry no
    /// events, so the mailbox does not count them).
    private var heartbeatQueued = false
    private var recheckQueued = false
    /// Completed when the step running in a task (phase `working`) is back.
    private var step: EventLoopPromise<Void>?
    /// Set once the opening returned (see `openingFinished`).
    private var openStreams: OpenStreams?
    private var channelOpen = true
    private var grace = SlowConsumerRule.window
    private var ended = false

    init(head: EventLoopPromise<StreamRequest>, eventLoop: any EventLoop, logger: Logger) {
        self.head = head
        self.eventLoop = eventLoop
        self.logger = logger
    }

    // MARK: The request

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // After the head, what the client sends (a GET's body, pipelined requests) is dropped:
        // the stream is the connection's last response.
        if case .readingHead = phase { context.fireChannelRead(data) }
    }

    /// From `StreamHeadReader`, on the event loop.
    func read(_ request: HTTPRequestHead, channel: any Channel) {
        guard let head else { return }
        self.head = nil
        do {
            let converted = try HTTPRequest(request, secure: false, splitCookie: false)
            phase = .opening
            head.succeed(StreamRequest(head: converted, version: request.version, channel: channel, connection: self))
        } catch {
            head.fail(error)
            refuseUnreadable()
        }
    }

    /// From `StreamHeadReader`: the decoder could not read the head. Answered as Hummingbird
    /// answers a request it cannot parse: 400, and the connection closes.
    func headUnreadable(_ error: any Error) {
        guard case .readingHead = phase else { return }
        logger.debug("unreadable stream request", metadata: ["error": "\(error)"])
        head?.fail(error)
        head = nil
        refuseUnreadable()
    }

    private func refuseUnreadable() {
        phase = .finished
        guard let context else { return }
        let refusal = APIError(status: 400, code: "bad_request", message: "The request is not valid HTTP/1.1.")
        for part in refusal.closingResponseParts(version: .http1_1) { context.write(wrapOutboundOut(part), promise: nil) }
        context.flush()
        context.close(promise: nil)
    }

    /// The opening is written: from now on this handler writes. Called from any thread.
    /// `grace`: how long a reset may wait for a client that reads nothing (see `SlowConsumerRule`).
    func goLive(session: StreamSession, progress: StreamSession.Progress, grace: Duration) {
        eventLoop.execute {
            self.grace = grace
            self.session = session
            self.progress = progress
            // The client left (or the server began shutting down) while the stream opened:
            // `endWhenDone` cancels the subscription once the connection has closed.
            guard self.phase == .opening else { return }
            self.phase = .live
            // The client closed its side while the stream opened: it has the opening; end now.
            if self.inputClosed { return self.finish() }
            self.drain()
        }
    }

    // MARK: MailboxConsumer

    func mailbox(_ mailbox: Mailbox, received signal: SessionSignal) {
        eventLoop.execute { self.accept(mailbox, .signal(signal)) }
    }

    func mailboxClosed(_ mailbox: Mailbox) {
        eventLoop.execute { self.accept(mailbox, .closed) }
    }

    private func accept(_ mailbox: Mailbox, _ item: Queued) {
        if case .signal(let signal) = item {
            switch signal {
            case .heartbeat:
                if heartbeatQueued { return }
                heartbeatQueued = true
            case .recheck:
                if recheckQueued { return }
                recheckQueued = true
            case .event, .events, .client:
                break
            }
        }
        switch phase {
        case .finished:
            return
        case .blocked:
            if case .closed = item, mailbox === progress?.subscription.mailbox {
                // Overflowed while the socket was full (or shut down): no use writing the backlog.
                clearQueue()
                closed(mailbox)
                return
            }
            queue.append((mailbox, item))
        case .readingHead, .opening, .working:
            queue.append((mailbox, item))
        case .live:
            queue.append((mailbox, item))
            drain()
        }
    }

    // MARK: Writing

    /// Writes what is queued while the stream is live and the socket takes it; one flush.
    private func drain() {
        guard let context else { return }
        var wrote = false
        var taken = 0
        defer {
            queue.removeFirst(min(taken, queue.count))
            if wrote { context.flush() }
        }
        if let mailbox = progress?.subscription.mailbox, mailbox.overflowed {
            // What it still holds is stale: the reset's snapshot replaces it.
            clearQueue()
            return closed(mailbox)
        }
        while phase == .live, taken < queue.count {
            guard context.channel.isWritable else {
                phase = .blocked
                return
            }
            let (mailbox, item) = queue[taken]
            taken += 1
            if case .signal(.heartbeat) = item { heartbeatQueued = false }
            if case .signal(.recheck) = item { recheckQueued = false }
            // A mailbox replaced by a reset: what it still delivers is stale.
            guard mailbox === progress?.subscription.mailbox else { continue }
            switch item {
            case .closed:
                closed(mailbox)
            case .signal(let signal):
                mailbox.took(signal)
                if case .recheck = signal {
                    start(.recheck)
                } else if let bytes = progress?.sent.bytes(for: signal) {
                    context.write(wrapOutboundOut(.body(.byteBuffer(bytes))), promise: nil)
                    wrote = true
                }
            }
        }
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if phase == .blocked, context.channel.isWritable {
            phase = .live
            drain()
        }
        context.fireChannelWritabilityChanged()
    }

    /// The current mailbox closed: overflowed (reset from a snapshot) or ended by the hub.
    private func closed(_ mailbox: Mailbox) {
        if mailbox.overflowed {
            let topic = session.map { "\($0.topic)" } ?? ""
            guard progress?.slowConsumer.resetAllowed() ?? false else {
                logger.info("stream client fell behind again soon after a reset; closing", metadata: ["topic": "\(topic)"])
                return finish()
            }
            start(.reset)  // resynchronise logs it
            // The reset's writes wait for a client that reads nothing at all: give up on it.
            if let rule = progress?.slowConsumer {
                eventLoop.scheduleTask(in: TimeAmount(grace)) {
                    guard rule.resetStillPending, self.phase != .finished else { return }
                    self.logger.info("stream client read nothing of its reset; closing", metadata: ["topic": "\(topic)"])
                    self.finish()
                }
            }
        } else {
            finish()
        }
    }

    /// Runs a step that reads the database in a task; signals queue until it is done.
    private func start(_ work: Work) {
        guard let session, let progress, let channel = context?.channel else { return finish() }
        phase = .working
        step = eventLoop.makePromise(of: Void.self)
        let logger = logger
        Task.detached {
            var progress = progress
            var writer = ChannelStreamWriter(channel: channel)
            var ended = false
            do {
                switch work {
                case .recheck: try await session.recheckScope(&progress.sent, viewer: &progress.viewer, writer: &writer)
                case .reset: try await session.resynchronise(&progress, writer: &writer)
                }
            } catch is StreamSession.ViewerGone {
                ended = true  // the `closed` event is out
            } catch {
                logger.debug("stream step failed", metadata: ["error": "\(error)"])
                ended = true
            }
            let outcome = (progress, ended)
            self.eventLoop.execute { self.resume(outcome.0, ended: outcome.1) }
        }
    }

    private func resume(_ progress: StreamSession.Progress, ended: Bool) {
        progress.slowConsumer.resetWritten()
        // A reset has replaced (and cancelled) the subscription: the new one is the stream's now.
        self.progress = progress
        step?.succeed()
        step = nil
        switch phase {
        case .finished:
            break  // the client left while the step ran
        case .working:
            phase = .live
            if ended { finish() } else { drain() }
        case .readingHead, .opening, .live, .blocked:
            assertionFailure("a step resumed a stream that was not waiting for it")
        }
    }

    /// Ends the stream once: the response is finished and the connection closed. The
    /// subscription is cancelled once the connection has closed (`endWhenDone`).
    private func finish() {
        guard phase != .finished else { return }
        phase = .finished
        clearQueue()
        guard let context, context.channel.isActive else { return }
        context.write(wrapOutboundOut(.end(nil)), promise: nil)
        context.flush()
        context.close(promise: nil)
    }

    private func clearQueue() {
        queue.removeAll()
        heartbeatQueued = false
        recheckQueued = false
    }

    /// From the connection's task once `EventLoopStreams.serve` returned: the stream is the
    /// event loop's now. When the connection has also closed (and any step is back), the
    /// subscription is cancelled and `streams` is told.
    func openingFinished(then streams: OpenStreams) {
        eventLoop.execute {
            self.openStreams = streams
            self.endWhenDone()
        }
    }

    /// Cancels the subscription once nothing uses it any more: the opening has returned, the
    /// connection is closed and no step runs. A stream keeps its place in `OpenStreams` until then.
    private func endWhenDone() {
        guard let openStreams, !channelOpen, !ended else { return }
        ended = true
        let running = step?.futureResult ?? eventLoop.makeSucceededVoidFuture()
        running.whenComplete { _ in
            let subscription = self.progress?.subscription
            self.progress = nil
            Task {
                await subscription?.cancel()
                openStreams.leave()
            }
        }
    }

    // MARK: Connection events

    func channelInactive(context: ChannelHandlerContext) {
        head?.fail(ChannelError.eof)
        head = nil
        finish()
        channelOpen = false
        endWhenDone()
        context.fireChannelInactive()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server is shutting down, or the client closed its side of the connection (as
        // Hummingbird's streams do on `consumeWithInboundCloseHandler`): end the stream; a
        // request not yet read is dropped.
        guard event is ChannelShouldQuiesceEvent || (event as? ChannelEvent) == .inputClosed else {
            return context.fireUserInboundEventTriggered(event)
        }
        switch phase {
        case .readingHead:
            context.close(promise: nil)
        case .opening where (event as? ChannelEvent) == .inputClosed:
            // Let the opening (or the refusal) be written first, as Hummingbird's
            // `consumeWithInboundCloseHandler` does.
            inputClosed = true
        default:
            finish()
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A request head the decoder cannot parse, or a socket error: nothing sensible can be written.
        context.close(promise: nil)
    }
}
