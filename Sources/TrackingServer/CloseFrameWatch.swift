import NIOCore
import NIOWebSocket
import Synchronization

/// Sits right after a WebSocket's frame encoder, where every frame written to the socket
/// passes, the session's and WSCore's (which closes the socket itself on shutdown and on
/// protocol errors). Once a Close frame has gone out it drops whatever follows (RFC 6455
/// §5.5.1: no data after Close) and raises `sent`, so the session's `WebSocketLane` leaves
/// events to the task, whose writes then fail the way they did before the lane.
final class CloseFrameWatch: ChannelOutboundHandler, RemovableChannelHandler {
    typealias OutboundIn = WebSocketFrame
    typealias OutboundOut = WebSocketFrame

    /// Raised when the Close frame is written; read from any thread.
    final class Flag: Sendable {
        private let raised = Atomic(false)
        var isRaised: Bool { raised.load(ordering: .acquiring) }
        func raise() { raised.store(true, ordering: .releasing) }
    }

    let sent: Flag

    init(sent: Flag) {
        self.sent = sent
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard !sent.isRaised else {
            promise?.fail(ChannelError.outputClosed)
            return
        }
        if unwrapOutboundIn(data).opcode == .connectionClose { sent.raise() }
        context.write(data, promise: promise)
    }

    /// Adds a watch after `channel`'s frame encoder; returns its flag, or nil when the pipeline
    /// has no encoder (then nothing is watched).
    static func install(on channel: any Channel) async -> Flag? {
        let flag = Flag()
        do {
            try await channel.eventLoop.submit {
                let pipeline = channel.pipeline.syncOperations
                let encoder = try pipeline.handler(type: WebSocketFrameEncoder.self)
                try pipeline.addHandler(CloseFrameWatch(sent: flag), position: .after(encoder))
            }.get()
            return flag
        } catch {
            return nil
        }
    }
}
