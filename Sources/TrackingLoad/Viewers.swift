import Foundation
import NIOCore
import NIOHTTP1
import Synchronization

/// What a viewer watches.
public enum ViewerStream: Sendable {
    case tenant(String)
    case booking(String)

    var ssePath: String {
        switch self {
        case .tenant: return "/api/v1/stream"
        case .booking(let id): return "/api/v1/bookings/\(id)/stream"
        }
    }

    var room: String {
        switch self {
        case .tenant(let id): return "tenant:\(id)"
        case .booking(let id): return "booking:\(id)"
        }
    }
}

/// One simulated dashboard: an SSE or WebSocket connection, its tally behind a lock so the
/// orchestrator can check progress while it runs.
public final class Viewer: Sendable {
    public let stream: ViewerStream
    public let tally: Mutex<StreamTally>
    let token: String
    let latency: LatencyRecorder
    let counters: LoadCounters
    /// The connection, to close it from outside when the run ends.
    private let connection = Mutex<(any Channel)?>(nil)
    private let stopping = Atomic<Bool>(false)

    public init(stream: ViewerStream, transport: StreamTally.Transport, devices: [Int], deviceCount: Int, token: String,
                latency: LatencyRecorder, counters: LoadCounters) {
        self.stream = stream
        tally = Mutex(StreamTally(transport: transport, devices: devices, deviceCount: deviceCount))
        self.token = token
        self.latency = latency
        self.counters = counters
    }

    public var transport: StreamTally.Transport { tally.withLock { $0.transport } }
    public var opened: Bool { tally.withLock { $0.opened } }

    /// Runs until `stop()` (or the connection ends). `baseURL` like http://127.0.0.1:8080.
    public func run(baseURL: String) async {
        do {
            switch transport {
            case .sse: try await runSSE(baseURL: baseURL)
            case .ws: try await runWebSocket(baseURL: baseURL)
            }
        } catch {
            if !stopping.load(ordering: .relaxed) && !Task.isCancelled {
                counters.streamFailures.add(1, ordering: .relaxed)
                tally.withLock { $0.failure = "\(error)" }
            }
        }
        if tally.withLock({ $0.opened }) { counters.streamsOpen.subtract(1, ordering: .relaxed) }
    }

    public func stop() {
        stopping.store(true, ordering: .relaxed)
        guard let channel = connection.withLock({ $0 }) else { return }
        switch transport {
        case .sse: channel.close(promise: nil)
        case .ws: WebSocketViewerConnection.close(channel)
        }
    }

    private func opened(seq: Int64?, reset: Bool) {
        let first = tally.withLock { tally -> Bool in
            let first = !tally.opened
            tally.open(seq: seq, reset: reset)
            return first
        }
        if first { counters.streamsOpen.add(1, ordering: .relaxed) }
    }

    private func received(seq: Int64?, body: UnsafeBufferPointer<UInt8>) {
        let fix = EventScan.simFix(in: body)
        let now = wallMicros()
        let duplicate = tally.withLock { tally -> Bool in
            let before = tally.duplicates
            tally.event(seq: seq, fix: fix, latency: latency, now: now)
            return tally.duplicates != before
        }
        counters.deliveries.add(1, ordering: .relaxed)
        if duplicate { counters.duplicates.add(1, ordering: .relaxed) }
    }

    /// Keeps the connected channel for `stop()`, and closes it at once if the run was stopped
    /// while it connected.
    @Sendable private func adopt(_ channel: any Channel) {
        connection.withLock { $0 = channel }
        if stopping.load(ordering: .relaxed) { channel.close(promise: nil) }
    }

    // MARK: SSE

    private func runSSE(baseURL: String) async throws {
        let (host, port) = try LoadHTTP.hostAndPort(baseURL)
        try await SSEViewerConnection.run(host: host, port: port, path: stream.ssePath, token: token,
                                          frames: { self.frames(in: $0) }, opened: adopt)
    }

    /// Handles every complete frame (ending in a blank line) and returns the bytes consumed.
    private func frames(in bytes: UnsafeBufferPointer<UInt8>) -> Int {
        var start = 0
        var index = 0
        let newline = UInt8(ascii: "\n")
        while index + 1 < bytes.count {
            if bytes[index] == newline && bytes[index + 1] == newline {
                frame(UnsafeBufferPointer(rebasing: bytes[start..<(index + 1)]))
                index += 2
                start = index
            } else {
                index += 1
            }
        }
        return start
    }

    /// Parsed from bytes: Foundation's trimming of the `id:` and `event:` values, with a
    /// String per line, was 7 % of the simulator's CPU under the reference load (perf).
    private func frame(_ bytes: UnsafeBufferPointer<UInt8>) {
        guard let first = bytes.first, first != UInt8(ascii: ":") else { return }  // comment (heartbeat)
        var seq: Int64?
        var name = UnsafeBufferPointer(rebasing: bytes[0..<0])  // no `event:` line: "message"
        var dataStart = bytes.count
        // Lines before `data:` are short (`id:`, `event:`, `retry:`).
        var lineStart = 0
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "\n") {
                let line = UnsafeBufferPointer(rebasing: bytes[lineStart..<index])
                if line.starts(with: "data:".utf8) { dataStart = lineStart; break }
                if line.starts(with: "id:".utf8) {
                    seq = EventScan.integer(in: line, from: 3)
                } else if line.starts(with: "event:".utf8) {
                    var valueStart = 6
                    while valueStart < line.count, line[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
                    name = UnsafeBufferPointer(rebasing: line[valueStart...])
                }
                lineStart = index + 1
            }
            index += 1
        }
        let data = UnsafeBufferPointer(rebasing: bytes[dataStart...])
        if name.elementsEqual("snapshot".utf8) {
            opened(seq: seq, reset: false)
        } else if name.elementsEqual("reset".utf8) {
            opened(seq: seq, reset: true)
        } else if !name.isEmpty, !name.elementsEqual("message".utf8), !name.elementsEqual("closed".utf8) {
            received(seq: seq, body: data)
        }
    }

    // MARK: WebSocket

    private func runWebSocket(baseURL: String) async throws {
        let (host, port) = try LoadHTTP.hostAndPort(baseURL)
        let join = #"{"action":"join","room":"\#(stream.room)"}"#
        try await WebSocketViewerConnection.run(host: host, port: port, token: token, join: join,
                                                message: { self.message($0) }, opened: adopt)
    }

    private func message(_ bytes: UnsafeBufferPointer<UInt8>) {
        let seq = EventScan.integer(after: EventScan.seqKey, in: bytes)
        switch EventScan.string(after: EventScan.typeKey, in: bytes) {
        case "snapshot": opened(seq: seq, reset: false)
        case "reset": opened(seq: seq, reset: true)
        case "joined", "pong", "left": break
        case "error":
            tally.withLock { $0.failure = String(decoding: bytes, as: UTF8.self) }
        default: received(seq: seq, body: bytes)
        }
    }
}

enum ViewerError: Error, CustomStringConvertible {
    case refused(String)
    case closed
    var description: String {
        switch self {
        case .refused(let text): return "stream refused: \(text)"
        case .closed: return "the connection closed before the stream ended"
        }
    }
}
