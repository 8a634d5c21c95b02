import NIOCore
import NIOHTTP1
import NIOPosix

/// An SSE viewer's connection as NIO handlers: the request is written when the connection
/// opens, and every chunk of the response is scanned for frames on the event loop that read
/// it. Over AsyncHTTPClient each chunk resumed the viewer's task (a thread hop per event); at
/// 20,000 SSE events/s that was load the simulator added to the machine it measures.
enum SSEViewerConnection {
    /// Connects, then streams until the server ends the response (returns) or the connection
    /// closes (throws). `opened` gets the channel as soon as it is connected, to close it.
    static func run(host: String, port: Int, path: String, token: String,
                    frames: @escaping @Sendable (UnsafeBufferPointer<UInt8>) -> Int,
                    opened: @Sendable (any Channel) -> Void) async throws {
        let loop = MultiThreadedEventLoopGroup.singleton.next()
        let finished = loop.makePromise(of: Void.self)
        let request = HTTPRequestHead(version: .http1_1, method: .GET, uri: path, headers: [
            "Host": "\(host):\(port)", "Authorization": "Bearer \(token)", "Accept": "text/event-stream",
        ])
        let channel: any Channel
        do {
            channel = try await LoadConnection.connect(host: host, port: port, on: loop) { channel in
                try channel.pipeline.syncOperations.addHTTPClientHandlers()
                try channel.pipeline.syncOperations.addHandler(Handler(request: request, frames: frames, finished: finished))
            }
        } catch {
            finished.fail(error)
            throw error
        }
        opened(channel)
        try await LoadConnection.wait(for: finished.futureResult, closingOnCancel: channel)
    }

    private final class Handler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = HTTPClientResponsePart
        typealias OutboundOut = HTTPClientRequestPart

        private let request: HTTPRequestHead
        private let frames: @Sendable (UnsafeBufferPointer<UInt8>) -> Int
        private let finished: EventLoopPromise<Void>
        /// Bytes of a frame not yet complete; a refusal's body.
        private var pending = ByteBuffer()
        private var refusal: HTTPResponseStatus?

        init(request: HTTPRequestHead, frames: @escaping @Sendable (UnsafeBufferPointer<UInt8>) -> Int,
             finished: EventLoopPromise<Void>) {
            self.request = request
            self.frames = frames
            self.finished = finished
        }

        func channelActive(context: ChannelHandlerContext) {
            context.write(wrapOutboundOut(.head(request)), promise: nil)
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
            context.fireChannelActive()
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            switch unwrapInboundIn(data) {
            case .head(let head):
                if head.status != .ok { refusal = head.status }
            case .body(var chunk):
                pending.writeBuffer(&chunk)
                guard refusal == nil else { return }
                let consumed = pending.withUnsafeReadableBytes { raw in
                    frames(UnsafeBufferPointer(start: raw.baseAddress?.assumingMemoryBound(to: UInt8.self), count: raw.count))
                }
                pending.moveReaderIndex(forwardBy: consumed)
                if pending.readableBytes == 0 { pending.clear() } else if pending.readerIndex > 1 << 16 { pending.discardReadBytes() }
            case .end:
                if let refusal {
                    finished.fail(ViewerError.refused("\(refusal.code) \(String(buffer: pending))"))
                } else {
                    finished.succeed()
                }
                context.close(promise: nil)
            }
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            finished.fail(error)
            context.close(promise: nil)
        }

        func channelInactive(context: ChannelHandlerContext) {
            // Closed by `stop()` (the viewer then ignores the error) or by the server mid-stream.
            finished.fail(ViewerError.closed)
            context.fireChannelInactive()
        }
    }
}
