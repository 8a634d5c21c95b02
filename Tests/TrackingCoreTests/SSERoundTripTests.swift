import Testing
import TrackingCore
import TrackingTestSupport

@Suite("SSEFrame + SSEParser")
struct SSERoundTripTests {
    /// SSEParser.Event has no public initializer; tests compare through this.
    struct Event: Equatable, CustomStringConvertible {
        var id: String?
        var event: String
        var data: String
        init(id: String?, event: String, data: String) { (self.id, self.event, self.data) = (id, event, data) }
        init(_ parsed: SSEParser.Event) { self.init(id: parsed.id, event: parsed.event, data: parsed.data) }
        var description: String { "[id \(id ?? "nil"), event \(event), data \(data.debugDescription)]" }
    }

    static func parseAll(_ text: String) -> (events: [Event], comments: Int) {
        var parser = SSEParser()
        let events = parser.feed(Array(text.utf8)).map(Event.init)
        return (events, parser.commentCount)
    }

    @Test("an event with id, name and JSON data round-trips")
    func single() {
        let frame = SSEFrame.event(id: 42, name: "location_update", data: #"{"seq":42,"latitude":52.5}"#)
        #expect(frame == "id: 42\nevent: location_update\ndata: {\"seq\":42,\"latitude\":52.5}\n\n")
        #expect(Self.parseAll(frame).events == [Event(id: "42", event: "location_update", data: #"{"seq":42,"latitude":52.5}"#)])
    }

    @Test("an event without id parses with a nil id")
    func noID() {
        #expect(Self.parseAll(SSEFrame.event(id: nil, name: "reset", data: "{}")).events == [Event(id: nil, event: "reset", data: "{}")])
    }

    @Test("multi-line data becomes several data lines and is joined back with newlines", arguments: [
        "line1\nline2", "a\n\nb", "trailing\n", "\nleading", "with: colon\n  indented",
    ])
    func multiLine(data: String) {
        let frame = SSEFrame.event(id: 1, name: "x", data: data)
        check(frame.split(separator: "\n", omittingEmptySubsequences: false).filter { $0.hasPrefix("data: ") }.count
            == data.split(separator: "\n", omittingEmptySubsequences: false).count)
        #expect(Self.parseAll(frame).events.map(\.data) == [data])
    }

    @Test("comments are counted and never dispatch an event; retry lines are ignored")
    func comments() {
        let stream = SSEFrame.comment("ping") + SSEFrame.retry(milliseconds: 2_000)
            + SSEFrame.event(id: 3, name: "a", data: "1") + SSEFrame.comment("ping")
        let (events, comments) = Self.parseAll(stream)
        #expect(events == [Event(id: "3", event: "a", data: "1")])
        #expect(comments == 2)
    }

    @Test("CRLF and bare CR line endings parse like LF")
    func lineEndings() {
        let lf = "id: 7\nevent: e\ndata: one\ndata: two\n\n"
        let expected = [Event(id: "7", event: "e", data: "one\ntwo")]
        #expect(Self.parseAll(lf.replacingOccurrences(of: "\n", with: "\r\n")).events == expected)
        #expect(Self.parseAll(lf.replacingOccurrences(of: "\n", with: "\r")).events == expected)
    }

    @Test("frames split at every byte boundary parse the same", arguments: [1, 2, 3, 5, 7, 64])
    func splitFeeds(chunk: Int) {
        let stream = SSEFrame.comment("hi") + SSEFrame.event(id: 1, name: "a", data: "x\ny")
            + SSEFrame.event(id: 2, name: "b", data: #"{"é":"ü"}"#) + SSEFrame.event(id: nil, name: "c", data: "")
        let crlf = stream.replacingOccurrences(of: "\n", with: "\r\n")
        for text in [stream, crlf] {
            let bytes = Array(text.utf8)
            var parser = SSEParser()
            var events: [Event] = []
            var start = 0
            while start < bytes.count {
                events += parser.feed(bytes[start..<min(start + chunk, bytes.count)]).map(Event.init)
                start += chunk
            }
            #expect(events == [
                Event(id: "1", event: "a", data: "x\ny"), Event(id: "2", event: "b", data: #"{"é":"ü"}"#),
                Event(id: nil, event: "c", data: ""),
            ])
            #expect(parser.commentCount == 1)
        }
    }

    @Test("a CR at the end of one feed and its LF at the start of the next make one line break")
    func crlfAcrossFeeds() {
        var parser = SSEParser()
        #expect(parser.feed(Array("data: a\r".utf8)).isEmpty)
        #expect(parser.feed(Array("\n\r".utf8)).map(Event.init) == [Event(id: nil, event: "message", data: "a")])
        #expect(parser.feed(Array("\ndata: b\r\n\r\n".utf8)).map(Event.init) == [Event(id: nil, event: "message", data: "b")])
    }

    @Test("only one space after the colon is stripped; a line without a colon is a field with an empty value")
    func fieldSyntax() {
        #expect(Self.parseAll("data:x\n\n").events.map(\.data) == ["x"])
        #expect(Self.parseAll("data:  x\n\n").events.map(\.data) == [" x"])
        #expect(Self.parseAll("event: e\ndata\ndata: y\n\n").events == [Event(id: nil, event: "e", data: "\ny")])
        #expect(Self.parseAll("unknown: z\ndata: d\n\n").events == [Event(id: nil, event: "message", data: "d")])
    }

    @Test("an unfinished event is not dispatched until its blank line arrives")
    func pending() {
        var parser = SSEParser()
        #expect(parser.feed(Array("id: 9\nevent: a\ndata: 1\n".utf8)).isEmpty)
        #expect(parser.feed(Array("\n".utf8)).map(Event.init) == [Event(id: "9", event: "a", data: "1")])
    }
}
