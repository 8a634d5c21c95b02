import Foundation
import NIOCore
import NIOPosix
import Synchronization
import TrackingCore

/// A bare TCP connection to the node, for what an HTTP client library hides: several requests
/// on one connection in a known order, a client that stops reading, the exact bytes answered.
final class RawConnection: Sendable {
    private let channel: any Channel
    private let received: Received

    private init(channel: any Channel, received: Received) {
        self.channel = channel
        self.received = received
    }

    /// `receiveBuffer`: the socket's receive buffer, set before connecting, so a client that
    /// stops reading fills the server's socket quickly.
    static func open(port: Int, receiveBuffer: Int32? = nil) async throws -> RawConnection {
        let received = Received()
        // A ceiling, not the default 10 s: on a machine busy with the whole suite a node's accept
        // queue can fill, and a dropped SYN is only retried after 1, 3, 7… s.
        var bootstrap = ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connectTimeout(.seconds(60))
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(Collector(received)) }
            }
        if let receiveBuffer {
            bootstrap = bootstrap.channelOption(ChannelOptions.socketOption(.so_rcvbuf), value: SocketOptionValue(receiveBuffer))
        }
        let channel = try await bootstrap.connect(host: "127.0.0.1", port: port).get()
        return RawConnection(channel: channel, received: received)
    }

    func send(_ text: String) async throws {
        try await channel.writeAndFlush(ByteBuffer(string: text)).get()
    }

    /// Sends bytes that are not text (a masked WebSocket frame).
    func send(bytes: [UInt8]) async throws {
        try await channel.writeAndFlush(ByteBuffer(bytes: bytes)).get()
    }

    /// Stops reading from the socket (the server's writes pile up), or reads again.
    func reading(_ on: Bool) async throws {
        try await channel.setOption(ChannelOptions.autoRead, value: on).get()
        if on { channel.read() }
    }

    /// Everything received so far, and whether the server closed the connection.
    var bytes: (text: String, closed: Bool) {
        received.state.withLock { (String(decoding: $0.bytes, as: UTF8.self), $0.closed) }
    }

    /// Waits until `probe` finds what it looks for in the raw bytes received so far (for
    /// binary protocols such as WebSocket frames, which a String would mangle).
    /// The default allows 60 s: beside the whole suite (88 suites sharing two cores and the
    /// process's two event-loop threads) a server's close has been seen to take over 20 s in
    /// CI. A close that never comes still fails here, and at the suite's time limit.
    func waitBytes<T>(_ what: String, timeout: Duration = .seconds(60), _ probe: ([UInt8], Bool) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        while true {
            let (bytes, closed) = received.state.withLock { ($0.bytes, $0.closed) }
            if let found = probe(bytes, closed) { return found }
            guard ContinuousClock.now < deadline else {
                throw SSEClientError(description: "timed out waiting for \(what); received \(bytes.count) bytes: "
                                     + String(decoding: bytes.suffix(600), as: UTF8.self))
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Waits until `probe` finds what it looks for in the bytes received so far, as text.
    func wait<T>(_ what: String, timeout: Duration = .seconds(60), _ probe: (String, Bool) -> T?) async throws -> T {
        try await waitBytes(what, timeout: timeout) { bytes, closed in probe(String(decoding: bytes, as: UTF8.self), closed) }
    }

    /// Forgets what was received so far (the next response starts at the beginning).
    func discardReceived() {
        received.state.withLock { $0.bytes.removeAll() }
    }

    /// Closes the sending side only (TCP half-close), as a client does that gives up.
    func finishSending() async throws {
        try await channel.close(mode: .output)
    }

    func close() async {
        try? await channel.close()
    }

    private final class Received: Sendable {
        let state = Mutex<(bytes: [UInt8], closed: Bool)>(([], false))
    }

    private final class Collector: ChannelInboundHandler, Sendable {
        typealias InboundIn = ByteBuffer
        let received: Received
        init(_ received: Received) { self.received = received }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.state.withLock { $0.bytes.append(contentsOf: buffer.readableBytesView) }
        }

        func channelInactive(context: ChannelHandlerContext) {
            received.state.withLock { $0.closed = true }
            context.fireChannelInactive()
        }
    }
}

/// An HTTP/1.1 response as read off the wire.
struct RawResponse {
    let statusLine: String
    /// Lower-cased names.
    let headers: [String: String]
    /// The body so far, de-chunked when the response is chunked.
    let body: String
    /// The de-chunked body is complete (last chunk, or Content-Length reached).
    let complete: Bool

    var status: Int { Int(statusLine.split(separator: " ").dropFirst().first ?? "") ?? 0 }

    /// The response at the start of `text`, once its head is complete.
    init?(_ text: String) {
        guard let headEnd = text.range(of: "\r\n\r\n") else { return nil }
        let lines = text[..<headEnd.lowerBound].components(separatedBy: "\r\n")
        statusLine = lines[0]
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        self.headers = headers
        let rest = String(text[headEnd.upperBound...])
        if headers["transfer-encoding"]?.lowercased() == "chunked" {
            (body, complete) = Self.dechunk(rest)
        } else if let length = headers["content-length"].flatMap(Int.init) {
            body = String(rest.utf8.prefix(length)) ?? rest
            complete = rest.utf8.count >= length
        } else {
            (body, complete) = (rest, false)
        }
    }

    private static func dechunk(_ text: String) -> (String, Bool) {
        var bytes = Substring(text).utf8[...]
        var body: [UInt8] = []
        while let lineEnd = bytes.firstRange(of: "\r\n".utf8) {
            guard let size = Int(String(decoding: bytes[..<lineEnd.lowerBound], as: UTF8.self), radix: 16) else { break }
            if size == 0 { return (String(decoding: body, as: UTF8.self), true) }
            let start = lineEnd.upperBound
            guard bytes.distance(from: start, to: bytes.endIndex) >= size + 2 else { break }
            let end = bytes.index(start, offsetBy: size)
            body.append(contentsOf: bytes[start..<end])
            bytes = bytes[bytes.index(end, offsetBy: 2)...]
        }
        return (String(decoding: body, as: UTF8.self), false)
    }

    /// The SSE events of the body so far.
    var events: [SSEParser.Event] {
        var parser = SSEParser()
        return parser.feed(ArraySlice(body.utf8))
    }
}
