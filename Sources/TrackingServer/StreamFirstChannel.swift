import HTTPTypes
import Hummingbird
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// The server's connections. Each connection's first request line is read before any HTTP
/// handling is set up:
/// - a `GET` of an SSE endpoint is served by `EventLoopStreams`: the stream opens in the
///   connection's task, then lives on as NIO handlers fed by the fan-out hub, with a small task
///   of its own. Hummingbird keeps a suspended chain of async frames (~30 KB) per connection for
///   as long as a response is being written, which made an idle stream cost ~39 KB.
/// - anything else gets `inner` (Hummingbird's HTTP/1 with WebSocket upgrade), unchanged.
struct StreamFirstChannel<Inner: ServerChildChannel>: ServerChildChannel {
    let inner: Inner
    let streams: EventLoopStreams

    struct Value: ServerChildChannelValue {
        let channel: any Channel
        /// Completes once the first request line is read.
        let route: EventLoopFuture<Route>
    }

    enum Route: Sendable {
        case http(Inner.Value)
        case stream(StreamRequest)
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            // NIO keeps each connection's last read buffer for reuse; its default first size
            // (2 KB) is a fifth of what an idle stream may cost. Reads still grow it as needed.
            try channel.syncOptions?.setOption(
                ChannelOptions.recvAllocator,
                value: AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 512, maximum: 65_536))
            let route = channel.eventLoop.makePromise(of: Route.self)
            try channel.pipeline.syncOperations.addHandler(
                RequestLineSniffer(inner: inner, route: route, logger: logger), name: "pgtrack.request-line")
            return Value(channel: channel, route: route.futureResult)
        }
    }

    func handle(value: Value, logger: Logger) async {
        switch try? await value.route.get() {
        case .http(let innerValue):
            await inner.handle(value: innerValue, logger: logger)
        case .stream(let request):
            // Opens the stream and returns: from here on the stream is handlers on the event
            // loop, with no task waiting for it (`OpenStreams` keeps the shutdown order).
            streams.open.enter()
            await streams.serve(request, logger: logger)
            request.connection.openingFinished(then: streams.open)
        case nil:
            break  // closed before a request line arrived
        }
    }
}

/// Buffers the bytes of a new connection until its request line is complete, then sets up the
/// pipeline for it and hands the bytes on.
final class RequestLineSniffer<Inner: ServerChildChannel>: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// A request head longer than this is not taken as a stream request; Hummingbird answers it.
    private static var maxHead: Int { 16_384 }

    private let inner: Inner
    typealias Route = StreamFirstChannel<Inner>.Route
    private let route: EventLoopPromise<Route>
    private let logger: Logger
    private var buffered: ByteBuffer?
    private var decided = false

    init(inner: Inner, route: EventLoopPromise<Route>, logger: Logger) {
        self.inner = inner
        self.route = route
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if buffered == nil { buffered = bytes } else { buffered!.writeBuffer(&bytes) }
        guard !decided, let buffered else { return }
        let view = buffered.readableBytesView
        guard let lineEnd = view.firstIndex(of: UInt8(ascii: "\n")) else {
            if view.count > Self.maxHead { decide(context: context, streamEndpoint: false) }
            return
        }
        guard Self.streamEndpoint(requestLine: view[view.startIndex..<lineEnd]) else {
            return decide(context: context, streamEndpoint: false)
        }
        // A stream request: wait for the whole head, as a WebSocket upgrade of the same path
        // stays Hummingbird's (it answers it as it always did).
        let head = String(decoding: view, as: UTF8.self)
        if let headEnd = head.range(of: "\r\n\r\n") ?? head.range(of: "\n\n") {
            let upgrade = head[..<headEnd.lowerBound].lowercased().contains("\nupgrade:")
            decide(context: context, streamEndpoint: !upgrade)
        } else if view.count > Self.maxHead {
            decide(context: context, streamEndpoint: false)
        }
    }

    /// True for `GET <an SSE endpoint>[?query] HTTP/1.x`.
    static func streamEndpoint(requestLine: ByteBufferView) -> Bool {
        var line = requestLine[...]
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let words = line.split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard words.count == 3, words[0].elementsEqual("GET".utf8), words[2].starts(with: "HTTP/1.".utf8) else { return false }
        let path = words[1].prefix { $0 != UInt8(ascii: "?") }
        return StreamEndpoint(path: Substring(decoding: path, as: UTF8.self)) != nil
    }

    private func decide(context: ChannelHandlerContext, streamEndpoint: Bool) {
        decided = true
        let channel = context.channel
        if streamEndpoint {
            let head = context.eventLoop.makePromise(of: StreamRequest.self)
            head.futureResult.map { Route.stream($0) }.cascade(to: route)
            do {
                let connection = StreamConnection(head: head, eventLoop: context.eventLoop, logger: logger)
                let decoderName = "pgtrack.stream-request-decoder"
                try channel.pipeline.syncOperations.addHandler(HTTPResponseEncoder())
                try channel.pipeline.syncOperations.addHandler(connection)
                try channel.pipeline.syncOperations.addHandler(
                    ByteToMessageHandler(HTTPRequestDecoder(leftOverBytesStrategy: .dropBytes, limitConfiguration: Self.decoderLimits)),
                    name: decoderName)
                try channel.pipeline.syncOperations.addHandler(StreamHeadReader(connection: connection, decoderName: decoderName))
                handOver(context: context)
            } catch {
                logger.debug("stream connection setup failed", metadata: ["error": "\(error)"])
                head.fail(error)  // fails `route` too
                context.close(promise: nil)
            }
        } else {
            let loopBound = NIOLoopBound(context, eventLoop: context.eventLoop)
            inner.setup(channel: channel, logger: logger).hop(to: context.eventLoop).assumeIsolated().whenComplete { result in
                switch result {
                case .success(let value):
                    self.route.succeed(.http(value))
                    self.handOver(context: loopBound.value)
                case .failure(let error):
                    self.fail(context: loopBound.value, error)
                }
            }
        }
    }

    /// Hummingbird's limits (HTTP1Channel.Configuration's defaults), so a head refused there
    /// is refused here too.
    private static var decoderLimits: NIOHTTPDecoderLimitConfiguration {
        var limits = NIOHTTPDecoderLimitConfiguration()
        let hummingbird = HTTP1Channel.Configuration().httpDecoder
        limits.maxHeaderFieldSize = hummingbird.maxHeaderFieldSize
        limits.maxHeaderListSize = hummingbird.maxHeaderListSize
        limits.maxHeaderFieldCount = hummingbird.maxHeaderFieldCount
        return limits
    }

    /// Passes what was read to the handlers just added, and leaves the pipeline.
    private func handOver(context: ChannelHandlerContext) {
        if let buffered {
            self.buffered = nil
            context.fireChannelRead(wrapInboundOut(buffered))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }

    private func fail(context: ChannelHandlerContext, _ error: any Error) {
        logger.debug("connection setup failed", metadata: ["error": "\(error)"])
        route.fail(error)
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        if !decided { route.fail(ChannelError.eof) }
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // A connection the server closes before it ever became active (shutting down right
        // after accepting it) never sees channelInactive. Its route must still complete: the
        // connection's task waits on it (a debug build trapped on the leaked promise in a full
        // test run; a release build would have waited for ever and held up the shutdown).
        // Once decided, the route is the stream head's or the inner channel's to complete.
        if !decided { route.fail(ChannelError.eof) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        // The server is shutting down, or the client closed its side (connections accept
        // half-closure), before asking for anything: nothing to answer. Left open, the
        // connection would wait forever and hold up the server's shutdown.
        if !decided, event is ChannelShouldQuiesceEvent || (event as? ChannelEvent) == .inputClosed {
            context.close(promise: nil)
            return
        }
        context.fireUserInboundEventTriggered(event)
    }
}
