import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Heartbeats, a subscriber whose buffer overflows, and streams ending when the node closes them.
@Suite("SSE: heartbeats, overflow reset, closing", .timeLimit(.minutes(3)))
struct StreamLivenessTests {
    @Test("an idle stream gets heartbeat comments")
    func heartbeats() async throws {
        try await LiveNode.run({ $0.heartbeatSeconds = 1 }) { live in
            let setup = try await TestTenant.create(live.repository)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            try await stream.inbox.wait(timeout: .seconds(20), waitingFor: "two heartbeat comments") { state in
                state.comments >= 2 ? () : nil
            }
            #expect(stream.inbox.untaken.isEmpty, "heartbeats are comments, not events")
        }
    }

    @Test("a burst far larger than the client buffer: a slow_consumer reset at the head, then live events")
    func overflowResets() async throws {
        try await LiveNode.run({ $0.clientBufferSize = 16 }) { live in
            let setup = try await TestTenant.create(live.repository)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()

            try await live.postPositions(Fixes.array(0..<1_000), apiKey: setup.apiKey, expecting: 1_000)
            var before: [SSEParser.Event] = []
            var reset: SSEParser.Event?
            while reset == nil {
                let event = try await stream.next("the reset after the burst (seen \(before.count) updates)")
                if event.event == "reset" { reset = event } else { before.append(event) }
            }
            let resetEvent = try #require(reset)
            #expect(before.count < 1_000, "the reset comes before the burst is through")
            check(before.map(\.seq) == (0..<before.count).map { Int64($0 + 1) }, "the buffered events are 1, 2, … in order")
            let data = try resetEvent.object()
            #expect(data["reason"] as? String == "slow_consumer")
            #expect(resetEvent.seq == 1_000)
            #expect((data["positions"] as? [[String: Any]])?.first?.fixIndex == 999)

            try await live.postPositions(Fixes.object(1_000), apiKey: setup.apiKey, expecting: 1)
            let update = try await stream.next("the live event after the reset")
            #expect(update.event == "location_update")
            #expect(update.seq == 1_001)
        }
    }

    @Test("closing the hub ends open streams; new streams are refused with 503")
    func hubCloseEndsStreams() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            live.node.hub.closeAll()
            let end = try await stream.inbox.wait(timeout: .seconds(20), waitingFor: "the stream to end") { $0.end }
            #expect(end == "the server closed the stream")
            let refused = try await live.get("/api/v1/stream", apiKey: setup.apiKey)
            ValidationTests.expectError(refused, status: 503, code: "unavailable", "a stream after the hub closed")
        }
    }

    @Test("a stream announces Connection: close, so a client never reuses the connection the server closes after it")
    func connectionReusableAfterStreamEnds() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            // As a generic HTTP client would: no `Connection: close` on the stream request.
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey, keepAlive: true)
            _ = try await stream.opening()
            // Hummingbird closes the connection once a response that ran inside
            // consumeWithInboundCloseHandler finishes. Unless the response head said so, the
            // client puts the connection back in its pool when the stream ends and may send its
            // next request on a closed channel ("I/O on closed channel").
            let connection = stream.inbox.responseHeaders[canonicalForm: "connection"].map { $0.lowercased() }
            #expect(connection.contains("close"), "the SSE response head has Connection: \(connection)")

            live.node.hub.closeAll()
            _ = try await stream.inbox.wait(timeout: .seconds(20), waitingFor: "the stream to end") { $0.end }
            do {
                let reply = try await live.get("/health/ready")
                #expect(reply.status == 200 || reply.status == 503)
            } catch {
                Issue.record("the request after the stream ended failed: \(error)")
            }
        }
    }
}
