import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import TrackingCore

/// A test's SSE connection: AsyncHTTPClient streams the body, `SSEParser` frames it, and the
/// events wait in an inbox for the test to take them with bounded waits.
final class SSEStream: Sendable {
    /// Every wait of a test on a stream is bounded by this unless it says otherwise.
    static let defaultTimeout: Duration = .seconds(20)

    let url: String
    let inbox = SSEInbox()
    private let reader = Mutex<Task<Void, Never>?>(nil)

    private init(url: String) {
        self.url = url
    }

    /// Opens `url` and waits for the response head; throws unless it is `200 text/event-stream`.
    ///
    /// A stream holds its connection for its whole life, so by default it asks for
    /// `Connection: close` and the connection is never handed back to the client's pool;
    /// `keepAlive: true` leaves that out, as a generic HTTP client would.
    static func open(_ client: HTTPClient, url: String, headers: [(String, String)] = [], keepAlive: Bool = false,
                     timeout: Duration = defaultTimeout) async throws -> SSEStream {
        let stream = SSEStream(url: url)
        stream.start(client, headers: keepAlive ? headers : headers + [("Connection", "close")])
        let head = try await stream.inbox.wait(timeout: timeout, waitingFor: "the response head of \(url)") { $0.head }
        guard head.status == .ok else {
            await stream.close()
            throw SSEClientError(description: "GET \(url) answered \(head.status.code): \(head.body)")
        }
        guard head.headers.first(name: "content-type")?.hasPrefix("text/event-stream") == true else {
            await stream.close()
            throw SSEClientError(description: "GET \(url) is not an event stream: \(head.headers)")
        }
        return stream
    }

    private func start(_ client: HTTPClient, headers: [(String, String)]) {
        let inbox = self.inbox
        var request = HTTPClientRequest(url: url)
        request.headers.add(name: "Accept", value: "text/event-stream")
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        let task = Task {
            do {
                // The deadline only backstops a forgotten stream; tests bound each wait themselves.
                let response = try await client.execute(request, deadline: .now() + .minutes(10))
                guard response.status == .ok else {
                    let body = try await response.body.collect(upTo: 1 << 20)
                    inbox.received(status: response.status, headers: response.headers, errorBody: String(buffer: body))
                    inbox.finish("HTTP \(response.status.code)")
                    return
                }
                inbox.received(status: response.status, headers: response.headers)
                var parser = SSEParser()
                for try await buffer in response.body {
                    let events = parser.feed(buffer.readableBytesView)
                    inbox.append(events, comments: parser.commentCount)
                }
                inbox.finish("the server closed the stream")
            } catch {
                inbox.finish(Task.isCancelled ? "closed by the test" : "\(error)")
            }
        }
        reader.withLock { $0 = task }
    }

    // MARK: Reading

    /// The next event, waiting at most `timeout`.
    func next(_ what: String = "the next event", timeout: Duration = defaultTimeout) async throws -> SSEParser.Event {
        try await inbox.next(timeout: timeout, waitingFor: "\(what) on \(url)")
    }

    /// The next `count` events.
    func collect(_ count: Int, timeout: Duration = defaultTimeout) async throws -> [SSEParser.Event] {
        var events: [SSEParser.Event] = []
        while events.count < count {
            events.append(try await next("event \(events.count + 1) of \(count)", timeout: timeout))
        }
        return events
    }

    /// Every event up to and including the first one whose seq is at least `seq`.
    func collect(through seq: Int64, timeout: Duration = defaultTimeout) async throws -> [SSEParser.Event] {
        var events: [SSEParser.Event] = []
        while true {
            let event = try await next("seq \(seq) (last seen \(events.last?.id ?? "none"))", timeout: timeout)
            events.append(event)
            if let id = event.seq, id >= seq { return events }
        }
    }

    /// Waits for the first event and requires it to be a `snapshot` (or `reset`) event.
    func opening(_ name: String = "snapshot") async throws -> SSEParser.Event {
        let event = try await next("the \(name) event")
        guard event.event == name else {
            throw SSEClientError(description: "expected a \(name) event first on \(url), got \(event.event): \(event.data.prefix(200))")
        }
        return event
    }

    // MARK: Closing

    /// Disconnects and waits (bounded) for the reading task to notice.
    func close() async {
        guard let task = reader.withLock({ $0 }) else { return }
        task.cancel()
        let finished = await withTaskGroup(of: Bool.self) { group in
            group.addTask { await task.value; return true }
            group.addTask { try? await Task.sleep(for: .seconds(10)); return false }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
        if !finished { Issue.record("closing the stream \(url) took more than 10 s") }
    }
}

extension SSEParser.Event {
    /// The `id:` field as a seq.
    var seq: Int64? { id.flatMap { Int64($0) } }

    /// The data as a JSON object.
    func object() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: Data(data.utf8)) as? [String: Any] else {
            throw SSEClientError(description: "event data is not a JSON object: \(data.prefix(200))")
        }
        return object
    }
}
