/// Server-Sent Events framing (WHATWG HTML, "server-sent events").
public enum SSEFrame {
    /// One event. `data` must not contain newlines other than as separate `data:` lines, so
    /// multi-line data is split; our JSON payloads are single-line.
    public static func event(id: Int64?, name: String, data: String) -> String {
        var frame = ""
        frame.reserveCapacity(data.utf8.count + name.utf8.count + 32)
        if let id { frame += "id: \(id)\n" }
        frame += "event: \(name)\n"
        for line in data.split(separator: "\n", omittingEmptySubsequences: false) {
            frame += "data: \(line)\n"
        }
        frame += "\n"
        return frame
    }

    /// A comment line: ignored by clients, keeps proxies and idle timeouts from closing the stream.
    public static func comment(_ text: String) -> String { ": \(text)\n\n" }

    /// How long a browser's EventSource waits before reconnecting.
    public static func retry(milliseconds: Int) -> String { "retry: \(milliseconds)\n\n" }
}

/// An incremental SSE parser for clients (tests, the simulator). Feed bytes as they arrive.
public struct SSEParser: Sendable {
    public struct Event: Sendable, Equatable {
        public var id: String?
        public var event: String
        public var data: String
    }

    private var line: [UInt8] = []
    private var pendingID: String?
    private var pendingEvent: String?
    private var pendingData: [String] = []
    private var lastByteWasCR = false
    /// Comments seen (heartbeats), for clients that want to observe liveness.
    public private(set) var commentCount = 0

    public init() {}

    public mutating func feed<Bytes: Sequence>(_ bytes: Bytes) -> [Event] where Bytes.Element == UInt8 {
        var events: [Event] = []
        for byte in bytes {
            if byte == UInt8(ascii: "\n") && lastByteWasCR { lastByteWasCR = false; continue }
            lastByteWasCR = byte == UInt8(ascii: "\r")
            if byte == UInt8(ascii: "\n") || byte == UInt8(ascii: "\r") {
                if let event = endLine() { events.append(event) }
            } else {
                line.append(byte)
            }
        }
        return events
    }

    private mutating func endLine() -> Event? {
        defer { line.removeAll(keepingCapacity: true) }
        if line.isEmpty {  // blank line dispatches
            defer { pendingEvent = nil; pendingData = []; pendingID = nil }
            guard !pendingData.isEmpty || pendingEvent != nil else { return nil }
            return Event(id: pendingID, event: pendingEvent ?? "message", data: pendingData.joined(separator: "\n"))
        }
        let text = String(decoding: line, as: UTF8.self)
        if text.hasPrefix(":") { commentCount += 1; return nil }
        let field: Substring
        var value: Substring
        if let colon = text.firstIndex(of: ":") {
            field = text[..<colon]
            value = text[text.index(after: colon)...]
            if value.first == " " { value = value.dropFirst() }
        } else {
            field = Substring(text)
            value = ""
        }
        switch field {
        case "id": pendingID = String(value)
        case "event": pendingEvent = String(value)
        case "data": pendingData.append(String(value))
        default: break
        }
        return nil
    }
}
