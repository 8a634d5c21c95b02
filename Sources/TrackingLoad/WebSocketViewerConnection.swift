import NIOCore
import NIOHTTP1
import NIOPosix
import NIOWebSocket

/// A WebSocket viewer's connection as NIO handlers, for the reason SSEViewerConnection gives:
/// each text frame is handed to `message` on the event loop that read it. The upgrade keeps
/// the bytes that arrive with the 101 (`forwardBytes`): the server's first frames may share
/// that read.
enum WebSocketViewerConnection {
    /// Connects, upgrades, sends `join` and reads until the server closes (returns) or the
    /// connection fails (throws). `opened` gets the channel as soon as it is connected.
    static func run(host: String, port: Int, token: String, join: String,
                    message: @escaping @Sendable (UnsafeBufferPointer<UInt8>) -> Void,
                    opened: @Sendable (any Channel) -> Void) async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let finished = loop.makePromise(of: Void.self)
        let channel: any Channel
        do {
            channel = try await LoadConnection.connect(host: host, port: port, on: loop) { channel in
                let request = UpgradeRequest(host: "\(host):\(port)", token: token, finished: finished)
                let upgrader = NIOWebSocketClientUpgrader(maxFrameSize: 1 << 20) { channel, _ in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(
                            NIOWebSocketFrameAggregator(minNonFinalFragmentSize: 0, maxAccumulatedFrameCount: 1 << 16,
                                                        maxAccumulatedFrameSize: 64 << 20))
                        try channel.pipeline.syncOperations.addHandler(Frames(join: join, message: message, finished: finished))
                    }
                }
                try channel.pipeline.syncOperations.addHTTPClientHandlers(
                    leftOverBytesStrategy: .forwardBytes,
                    withClientUpgrade: (upgraders: [upgrader], completionHandler: { context in
                        context.pipeline.syncOperations.removeHandler(name: UpgradeRequest.name, promise: nil)
                    }))
                try channel.pipeline.syncOperations.addHandler(request, name: UpgradeRequest.name)
            }
        } catch {
            finished.fail(error)
            throw error
        }
        opened(channel)
        try await LoadConnection.wait(for: finished.futureResult, closingOnCancel: channel)
    }

    /// Closes the socket as a client should: a close frame, then the connection. Before the
    /// upgrade there is no WebSocket to close yet (and a frame would reach the HTTP encoder).
    static func close(_ channel: any Channel) {
        channel.eventLoop.execute {
            guard (try? channel.pipeline.syncOperations.handler(type: Frames.self)) != nil else {
                return channel.close(promise: nil)
            }
            var reason = channel.allocator.buffer(capacity: 2)
            reason.write(webSocketErrorCode: .normalClosure)
            let frame = WebSocketFrame(fin: true, opcode: .connectionClose, maskKey: .random(), data: reason)
            channel.writeAndFlush(frame).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    /// Writes the GET that the upgrade handler turns into an upgrade request; fails `finished`
    /// when the server refuses it.
    private final class UpgradeRequest: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPClientResponsePart
        typealias OutboundOut = HTTPClientRequestPart
        static let name = "pgtrack.websocket-upgrade-request"

        let host: String
        let token: String
        let finished: EventLoopPromise<Void>
        private var refusal: HTTPResponseStatus?
        private var body = ""

        init(host: String, token: String, finished: EventLoopPromise<Void>) {
            self.host = host
            self.token = token
            self.finished = finished
        }

        func channelActive(context: ChannelHandlerContext) {
            let head = HTTPRequestHead(version: .http1_1, method: .GET, uri: "/ws", headers: [
                "Host": host, "Authorization": "Bearer \(token)", "Content-Length": "0",
            ])
            context.write(wrapOutboundOut(.head(head)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            // Only a refused upgrade reaches here.
            switch unwrapInboundIn(data) {
            case .head(let head): refusal = head.status
            case .body(let chunk): body += String(buffer: chunk)
            case .end:
                finished.fail(ViewerError.refused("\(refusal?.code ?? 0) \(body)"))
                context.close(promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            finished.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            finished.fail(ViewerError.closed)  // closed before the upgrade
            context.fireChannelInactive()
        }
    }

    /// The upgraded connection: joins the room, answers pings, hands on text frames.
    private final class Frames: ChannelInboundHandler {
        typealias InboundIn = WebSocketFrame
        typealias OutboundOut = WebSocketFrame

        let join: String
        let message: @Sendable (UnsafeBufferPointer<UInt8>) -> Void
        let finished: EventLoopPromise<Void>

        init(join: String, message: @escaping @Sendable (UnsafeBufferPointer<UInt8>) -> Void, finished: EventLoopPromise<Void>) {
            self.join = join
            self.message = message
            self.finished = finished
        }

        func handlerAdded(context: ChannelHandlerContext) {
            let text = context.channel.allocator.buffer(string: join)
            context.writeAndFlush(wrapOutboundOut(WebSocketFrame(fin: true, opcode: .text, maskKey: .random(), data: text)),
                                  promise: nil)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let frame = unwrapInboundIn(data)
            switch frame.opcode {
            case .text:
                frame.unmaskedData.withUnsafeReadableBytes { raw in
                    message(UnsafeBufferPointer(start: raw.baseAddress?.assumingMemoryBound(to: UInt8.self), count: raw.count))
                }
            case .ping:
                let pong = WebSocketFrame(fin: true, opcode: .pong, maskKey: .random(), data: frame.unmaskedData)
                context.writeAndFlush(wrapOutboundOut(pong), promise: nil)
            case .connectionClose:
                finished.succeed()
                context.close(promise: nil)
            default:
                break
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            finished.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            finished.fail(ViewerError.closed)  // ignored after a close frame
            context.fireChannelInactive()
        }
    }
}
