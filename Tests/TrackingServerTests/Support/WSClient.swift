import AsyncHTTPClient
import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdWSClient
import NIOCore
import NIOHTTP1
import NIOWebSocket
import Synchronization
import Testing
import TrackingTestSupport

/// One text message a server sent on a test's WebSocket, with its JSON at hand.
struct WSMessage: Sendable, CustomStringConvertible {
    let text: String

    /// The message as a JSON object (empty when it is not one).
    var object: [String: Any] { (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? [:] }
    var isObject: Bool { (try? JSONSerialization.jsonObject(with: Data(text.utf8))) is [String: Any] }
    var type: String? { object["type"] as? String }
    var room: String? { object["room"] as? String }
    var seq: Int64? { (object["seq"] as? Int).map(Int64.init) }
    var code: String? { object["code"] as? String }
    var deviceID: String? { object["device_id"] as? String }
    var bookingID: String? { object["booking_id"] as? String }
    var status: String? { object["status"] as? String }
    /// `attributes.i` of a location update: which fix it is (see `Fixes`).
    var fixIndex: Int? { object.fixIndex }
    /// Device ids in a snapshot or reset.
    var snapshotDevices: Set<String> {
        Set(((object["positions"] as? [[String: Any]]) ?? []).compactMap { $0["device_id"] as? String })
    }

    var description: String { String(text.prefix(400)) }
}

/// Why a wait on a socket gave up, or why it could not open.
struct WSClientError: Error, CustomStringConvertible {
    let description: String
}

/// What the reading side of one WebSocket has seen, with bounded waits on it (the same
/// scheme as `SSEInbox`: the reader appends, the test takes, a timer wakes waiters).
final class WSInbox: Sendable {
    struct State {
        var writer: WebSocketOutboundWriter?
        var messages: [WSMessage] = []
        var taken = 0
        /// Why the socket ended; set once.
        var end: String?
        /// The close frame the server sent, when it closed the socket.
        var closeCode: WebSocketErrorCode?
        var closeReason: String?
        var version: UInt64 = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
    }

    private let state = Mutex(State())

    func opened(_ writer: WebSocketOutboundWriter) { change { $0.writer = writer } }
    func append(_ text: String) { change { $0.messages.append(WSMessage(text: text)) } }

    func finish(_ reason: String, code: WebSocketErrorCode? = nil, closeReason: String? = nil) {
        change { state in
            guard state.end == nil else { return }
            state.end = reason
            state.closeCode = code
            state.closeReason = closeReason
        }
    }

    var writer: WebSocketOutboundWriter? { state.withLock { $0.writer } }
    var end: String? { state.withLock { $0.end } }
    var close: (code: WebSocketErrorCode?, reason: String?) { state.withLock { ($0.closeCode, $0.closeReason) } }
    var untaken: [WSMessage] { state.withLock { Array($0.messages[$0.taken...]) } }
    var all: [WSMessage] { state.withLock { $0.messages } }

    func next(timeout: Duration, waitingFor what: String) async throws -> WSMessage {
        try await wait(timeout: timeout, waitingFor: what) { state in
            guard state.taken < state.messages.count else { return nil }
            defer { state.taken += 1 }
            return state.messages[state.taken]
        }
    }

    /// Waits until `probe` finds its value. Throws when the socket ended first (unless the probe
    /// still finds it there) or when `timeout` passes.
    func wait<T>(timeout: Duration, waitingFor what: String, endIsFine: Bool = false, _ probe: (inout State) -> T?) async throws -> T {
        let deadline = ContinuousClock.now + timeout
        let timer = Task { [weak self] in
            try? await Task.sleep(until: deadline, clock: .continuous)
            self?.change { _ in }
        }
        defer { timer.cancel() }
        while true {
            let (value, end, version) = state.withLock { state in (probe(&state), state.end, state.version) }
            if let value { return value }
            if let end, !endIsFine { throw WSClientError(description: "the socket ended (\(end)) while waiting for \(what)") }
            if ContinuousClock.now >= deadline {
                throw WSClientError(description: "nothing arrived within \(timeout) while waiting for \(what)")
            }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let changed = state.withLock { state -> Bool in
                    guard state.version == version else { return true }
                    state.waiters.append(continuation)
                    return false
                }
                if changed { continuation.resume() }
            }
        }
    }

    private func change(_ update: (inout State) -> Void) {
        let waiters = state.withLock { state in
            update(&state)
            state.version &+= 1
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// A test's WebSocket: the HummingbirdWSClient connection runs in a task for the life of the
/// socket, every text message goes to an inbox, and the test sends and takes with bounded waits.
final class WSConnection: Sendable {
    static let defaultTimeout: Duration = .seconds(20)

    let url: String
    let inbox = WSInbox()
    private let task = Mutex<Task<Void, Never>?>(nil)

    private init(url: String) {
        self.url = url
    }

    /// Connects to `url` and waits until the upgrade succeeded; throws if it did not.
    static func open(url: String, headers: HTTPFields = [:], timeout: Duration = defaultTimeout) async throws -> WSConnection {
        let connection = WSConnection(url: url)
        connection.start(headers: headers)
        do {
            _ = try await connection.inbox.wait(timeout: timeout, waitingFor: "the upgrade of \(url)") { $0.writer }
        } catch {
            await connection.close()
            throw error
        }
        return connection
    }

    private func start(headers: HTTPFields) {
        let inbox = self.inbox
        let url = self.url
        let task = Task {
            do {
                let closeFrame = try await WebSocketClient.connect(
                    url: url, configuration: .init(maxFrameSize: 1 << 20, additionalHeaders: headers), logger: TestCluster.logger
                ) { inbound, outbound, _ in
                    inbox.opened(outbound)
                    for try await message in inbound.messages(maxSize: 16 << 20) {
                        switch message {
                        case .text(let text): inbox.append(text)
                        case .binary(let buffer): inbox.append("<binary \(buffer.readableBytes) bytes>")
                        }
                    }
                }
                inbox.finish("closed (\(closeFrame.map { "\($0.closeCode) \($0.reason ?? "")" } ?? "no close frame"))",
                             code: closeFrame?.closeCode, closeReason: closeFrame?.reason)
            } catch {
                inbox.finish(Task.isCancelled ? "cancelled by the test" : "failed: \(error)")
            }
        }
        self.task.withLock { $0 = task }
    }

    // MARK: Sending

    func send(_ text: String) async throws {
        guard let writer = inbox.writer else { throw WSClientError(description: "\(url) is not open") }
        try await writer.writeTextMessage(text)
    }

    func sendBinary(_ bytes: [UInt8]) async throws {
        guard let writer = inbox.writer else { throw WSClientError(description: "\(url) is not open") }
        try await writer.writeBinaryMessage(ByteBuffer(bytes: bytes))
    }

    func join(_ room: String) async throws { try await send(#"{"action":"join","room":"\#(room)"}"#) }
    func leave(_ room: String) async throws { try await send(#"{"action":"leave","room":"\#(room)"}"#) }
    func resume(_ room: String, since: Int64) async throws { try await send(#"{"action":"resume","room":"\#(room)","since":\#(since)}"#) }
    func ping() async throws { try await send(#"{"action":"ping"}"#) }

    // MARK: Reading

    func next(_ what: String = "the next message", timeout: Duration = defaultTimeout) async throws -> WSMessage {
        try await inbox.next(timeout: timeout, waitingFor: "\(what) on \(url)")
    }

    func collect(_ count: Int, timeout: Duration = defaultTimeout) async throws -> [WSMessage] {
        var messages: [WSMessage] = []
        while messages.count < count {
            messages.append(try await next("message \(messages.count + 1) of \(count) (had \(messages.map(\.description)))", timeout: timeout))
        }
        return messages
    }

    /// The next message, required to be of `type` (and in `room` when given).
    func expect(_ type: String, room: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) async throws -> WSMessage {
        let message = try await next("a \(type) message")
        guard message.type == type, room == nil || message.room == room else {
            throw WSClientError(description: "expected \(type)\(room.map { " in \($0)" } ?? "") on \(url), got \(message)")
        }
        return message
    }

    /// Joins `room` and takes `joined` and the opening snapshot.
    @discardableResult
    func joinRoom(_ room: String) async throws -> WSMessage {
        try await join(room)
        _ = try await expect("joined", room: room)
        return try await expect("snapshot", room: room)
    }

    /// Sends a ping and requires the next message to be the pong: everything queued before the
    /// ping has been written by then (the lane and the session task take signals in arrival
    /// order, and the lane hands over only once the task's writes are out), so nothing else is pending.
    func expectQuiet(_ comment: String) async throws {
        try await ping()
        let message = try await next("the pong (\(comment))")
        guard message.type == "pong" else {
            throw WSClientError(description: "\(comment): expected only the pong, got \(message)")
        }
    }

    /// Sends a ping and takes every message up to its pong; returns those before the pong.
    func drain(_ comment: String) async throws -> [WSMessage] {
        try await ping()
        var messages: [WSMessage] = []
        while true {
            let message = try await next("the pong (\(comment)), after \(messages.count) messages")
            if message.type == "pong" { return messages }
            messages.append(message)
        }
    }

    /// Waits for the server to close the socket; returns its close code and reason.
    func closed(timeout: Duration = defaultTimeout) async throws -> (code: WebSocketErrorCode?, reason: String?, end: String) {
        let end = try await inbox.wait(timeout: timeout, waitingFor: "the server to close \(url)", endIsFine: true) { $0.end }
        let close = inbox.close
        return (close.code, close.reason, end)
    }

    // MARK: Closing

    /// Closes the socket from the client side and waits (bounded) for the connection to end.
    func close() async {
        guard let task = task.withLock({ $0 }) else { return }
        if inbox.end == nil, let writer = inbox.writer {
            try? await writer.close(.normalClosure, reason: nil)
        }
        if await Self.finishes(task, within: .seconds(5)) { return }
        task.cancel()
        if await !Self.finishes(task, within: .seconds(10)) { Issue.record("closing the socket \(url) took more than 15 s") }
    }

    private static func finishes(_ task: Task<Void, Never>, within limit: Duration) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask { await task.value; return true }
            group.addTask { try? await Task.sleep(for: limit); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }
}

/// The sockets of one test, closed when the test's body ends, whether it passed or not.
final class WSSockets: Sendable {
    let live: LiveNode
    private let sockets = Mutex<[WSConnection]>([])

    init(_ live: LiveNode) {
        self.live = live
    }

    var wsBase: String { "ws://127.0.0.1:\(live.port)" }

    /// Opens `path` (with its query) as a WebSocket; credentials as headers when given.
    func open(_ path: String, apiKey: String? = nil, bearer: String? = nil) async throws -> WSConnection {
        let socket = try await WSConnection.open(url: wsBase + path, headers: Self.headers(apiKey: apiKey, bearer: bearer))
        sockets.withLock { $0.append(socket) }
        return socket
    }

    /// Opens `path` expecting a refusal: the 101, one `error` message, then the server's close.
    /// Read off a raw TCP connection: swift-nio's client upgrader (under HummingbirdWSClient)
    /// loses frames that arrive in the same read as the 101, which a loaded machine makes
    /// likely however long the server waits before it speaks (`WebSocketRoutes.firstFrameDelay`).
    func refusal(_ path: String, apiKey: String? = nil, bearer: String? = nil) async throws -> Refusal {
        let connection = try await RawConnection.open(port: live.port)
        defer { Task { await connection.close() } }
        try await connection.send(Self.upgradeRequest(path, port: live.port, apiKey: apiKey, bearer: bearer))
        let (head, frames) = try await connection.waitBytes("the refusal of \(path)") { bytes, closed -> (String, [ServerFrame])? in
            guard let headEnd = bytes.firstRange(of: Array("\r\n\r\n".utf8)) else { return nil }
            let head = String(decoding: bytes[..<headEnd.lowerBound], as: UTF8.self)
            guard head.hasPrefix("HTTP/1.1 101") else { return (head, []) }  // no upgrade: fail below, now
            let frames = ServerFrame.parse(bytes[headEnd.upperBound...])
            return frames.contains { $0.opcode == 0x8 } || closed ? (head, frames) : nil
        }
        try #require(head.hasPrefix("HTTP/1.1 101"), "the upgrade goes on, the refusal comes on the socket: \(head.prefix(300))")
        let text = try require(frames.first { $0.opcode == 0x1 }, "no text frame before the close of \(path)")
        let close = try require(frames.first { $0.opcode == 0x8 }, "no close frame on \(path)")
        let code = close.payload.count >= 2 ? Int(close.payload[0]) << 8 | Int(close.payload[1]) : nil
        return Refusal(message: WSMessage(text: String(decoding: text.payload, as: UTF8.self)),
                       code: code.map { WebSocketErrorCode(codeNumber: $0) },
                       reason: close.payload.count > 2 ? String(decoding: close.payload.dropFirst(2), as: UTF8.self) : nil)
    }

    /// A WebSocket upgrade request as raw bytes, for a connection opened with `RawConnection`.
    static func upgradeRequest(_ path: String, port: Int, apiKey: String? = nil, bearer: String? = nil) -> String {
        var request = "GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
        if let apiKey { request += "X-API-Key: \(apiKey)\r\n" }
        if let bearer { request += "Authorization: Bearer \(bearer)\r\n" }
        return request + "\r\n"
    }

    /// One unmasked frame as a server sends it (RFC 6455 §5.2).
    struct ServerFrame {
        let opcode: UInt8
        let payload: [UInt8]

        /// The complete frames at the start of `bytes`.
        static func parse(_ bytes: ArraySlice<UInt8>) -> [ServerFrame] {
            var frames: [ServerFrame] = []
            var at = bytes.startIndex
            while bytes.endIndex - at >= 2 {
                var length = Int(bytes[at + 1] & 0x7f)
                var start = at + 2
                if length == 126 {
                    guard bytes.endIndex - at >= 4 else { break }
                    length = Int(bytes[at + 2]) << 8 | Int(bytes[at + 3])
                    start = at + 4
                } else if length == 127 {
                    guard bytes.endIndex - at >= 10 else { break }
                    length = (2..<10).reduce(0) { $0 << 8 | Int(bytes[at + $1]) }
                    start = at + 10
                }
                guard length >= 0, bytes.endIndex - start >= length else { break }
                frames.append(ServerFrame(opcode: bytes[at] & 0x0f, payload: Array(bytes[start..<start + length])))
                at = start + length
            }
            return frames
        }
    }

    struct Refusal {
        let message: WSMessage
        let code: WebSocketErrorCode?
        let reason: String?

        /// The error message says `status` and `code`, and the close code is 4000 + status.
        func expect(status: Int, code: String, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(message.type == "error" && message.object["status"] as? Int == status && message.code == code,
                    "\(comment): \(message)", sourceLocation: sourceLocation)
            #expect((message.object["message"] as? String)?.isEmpty == false, "\(comment): no message", sourceLocation: sourceLocation)
            #expect(self.code == .unknown(UInt16(4000 + status)) && reason == code,
                    "\(comment): closed with \(String(describing: self.code)) \(reason ?? "")", sourceLocation: sourceLocation)
        }
    }

    static func headers(apiKey: String?, bearer: String?) -> HTTPFields {
        var headers = HTTPFields()
        if let apiKey { headers[HTTPField.Name("X-API-Key")!] = apiKey }
        if let bearer { headers[.authorization] = "Bearer \(bearer)" }
        return headers
    }

    func closeAll() async {
        for socket in sockets.withLock({ $0 }) { await socket.close() }
    }
}

extension LiveNode {
    /// Runs `body` with a socket registry; every socket it opened is closed afterwards.
    func withSockets(_ body: (WSSockets) async throws -> Void) async throws {
        let sockets = WSSockets(self)
        do {
            try await body(sockets)
        } catch {
            await sockets.closeAll()
            throw error
        }
        await sockets.closeAll()
    }

    /// A plain HTTP request with the WebSocket upgrade headers (or, with `upgrade: false`,
    /// without them), to read how a refused upgrade or a missing one is answered. It goes on a
    /// connection of its own: the server looks for an upgrade only on a connection's first
    /// request. Redirects are not followed.
    func upgradeRequest(_ path: String, apiKey: String? = nil, bearer: String? = nil, upgrade: Bool = true) async throws -> Reply {
        let client = HTTPClient(eventLoopGroupProvider: .singleton,
                                configuration: .init(redirectConfiguration: .disallow, timeout: .init(connect: .seconds(60))))
        do {
            var request = HTTPClientRequest(url: base + path)
            if let apiKey { request.headers.add(name: "X-API-Key", value: apiKey) }
            if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
            if upgrade {
                for (name, value) in [("Connection", "Upgrade"), ("Upgrade", "websocket"), ("Sec-WebSocket-Version", "13"),
                                      ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")] {
                    request.headers.add(name: name, value: value)
                }
            }
            let response = try await client.execute(request, timeout: .seconds(20))
            let body = String(buffer: try await response.body.collect(upTo: 1 << 20))
            try await client.shutdown()
            return Reply(status: Int(response.status.code), body: body)
        } catch {
            try? await client.shutdown()
            throw error
        }
    }
}
