import Foundation
import Synchronization
import Testing
import TrackingCore
import TrackingServer
import TrackingStore
import TrackingTestSupport

/// The two ways an SSE stream is served: on the event loop when the stream is a connection's
/// first request (StreamConnection), by Hummingbird's task when the connection served other
/// requests first (StreamSession.live). Raw connections make the path certain.
@Suite("SSE: stream connections on the event loop and on keep-alive connections", .timeLimit(.minutes(3)))
struct StreamConnectionTests {
    static func streamRequest(_ path: String, apiKey: String?) -> String {
        "GET \(path) HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n"
            + (apiKey.map { "X-API-Key: \($0)\r\n" } ?? "") + "\r\n"
    }

    /// Waits for the response at the start of what `connection` received to satisfy `probe`.
    static func response(on connection: RawConnection, _ what: String, timeout: Duration = .seconds(20),
                         _ probe: @escaping (RawResponse) -> Bool = { _ in true }) async throws -> RawResponse {
        try await connection.wait(what, timeout: timeout) { text, _ in RawResponse(text).flatMap { probe($0) ? $0 : nil } }
    }

    @Test("a client that stops reading for good: the server ends its stream (after at most one slow_consumer reset) instead of queueing for ever; what it got runs without gaps, and resuming with Last-Event-ID brings the rest",
          arguments: [false, true])
    func stalledReaderIsClosedThenResumes(keepAlive: Bool) async throws {
        try await LiveNode.run({ $0.clientBufferSize = 64; $0.slowConsumerGrace = .seconds(2) }) { live in
            let setup = try await TestTenant.create(live.repository)
            let connection = try await RawConnection.open(port: live.port, receiveBuffer: 4_096)
            defer { Task { await connection.close() } }
            if keepAlive {
                // Served by Hummingbird's task (StreamSession.live), not on the event loop.
                try await connection.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                _ = try await Self.response(on: connection, "the health answer") { $0.complete }
                connection.discardReceived()
            }
            try await connection.send(Self.streamRequest("/api/v1/stream", apiKey: setup.apiKey))
            let opening = try await Self.response(on: connection, "the opening snapshot") { !$0.events.isEmpty }
            #expect(opening.status == 200)
            #expect(opening.events.first?.event == "snapshot")

            // Batches of 40 stay under the buffer of 64 one at a time: only a client that does
            // not read makes them pile up. Each fix carries 6 KB of attributes, so 75 batches are
            // 18 MB of frames: more than the kernel's socket buffers (at most 4 MB to send and
            // what the client's 4 KB window holds) and NIO's 64 KB before a write must wait.
            try await connection.reading(false)
            let batches = 75, size = 40
            try await live.postPaddedBatches(batches, of: size, apiKey: setup.apiKey)
            let last = Int64(batches * size)
            // The client still reads nothing: the server gives up on it by itself.
            _ = try await live.health { $0["subscribers"] as? Int == 0 }

            try await connection.reading(true)
            let (stream, closed) = try await connection.wait("the end of what the server had sent") { text, closed in
                closed ? (RawResponse(text), closed) : nil
            }
            #expect(closed)
            let events = try #require(stream).events.dropFirst()  // the snapshot
            let resets = events.filter { $0.event == "reset" }
            #expect(resets.count <= 1, "at most one reset, then a close: \(resets.count) resets")
            check(resets.allSatisfy { (try? $0.object()["reason"] as? String) == "slow_consumer" })
            // Between resets the seqs run on without gaps or repeats; each reset re-bases them.
            var expected: Int64 = 1
            for event in events {
                let seq = try #require(event.seq, "every event carries an id")
                if event.event == "reset" { expected = seq + 1; continue }
                #expect(seq == expected, "seq \(seq) where \(expected) was due")
                expected = seq + 1
            }
            let resumeFrom = expected - 1
            #expect(resumeFrom < last, "closed before the client had everything: the resume below brings the rest")

            // What EventSource does next: reconnect with the last id it has.
            let resumed = try await live.stream("/api/v1/stream", apiKey: setup.apiKey, lastEventID: "\(resumeFrom)")
            let rest = try await resumed.collect(through: last, timeout: .seconds(60))
            let seqs = rest.compactMap(\.seq)
            #expect(rest.allSatisfy { $0.event == "location_update" }, "\(Set(rest.map(\.event)))")
            #expect(seqs == Array((resumeFrom + 1)...last), "resumed \(seqs.first ?? -1)…\(seqs.last ?? -1), \(seqs.count) events")
        }
    }

    @Test("a stream asked for on a connection that already answered a request is served too, with the same events")
    func streamOnKeepAliveConnection() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let connection = try await RawConnection.open(port: live.port)
            defer { Task { await connection.close() } }
            try await connection.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
            let health = try await Self.response(on: connection, "the health answer") { $0.complete }
            #expect(health.status == 200 || health.status == 503)
            #expect(health.headers["connection"]?.lowercased() != "close", "the connection stays open for the next request")

            connection.discardReceived()
            try await connection.send(Self.streamRequest("/api/v1/stream", apiKey: setup.apiKey))
            let opening = try await Self.response(on: connection, "the opening snapshot") { !$0.events.isEmpty }
            #expect(opening.status == 200)
            #expect(opening.headers["content-type"]?.hasPrefix("text/event-stream") == true)
            #expect(opening.headers["connection"]?.lowercased() == "close")
            try await live.postPositions(Fixes.array(0..<3), apiKey: setup.apiKey, expecting: 3)
            let stream = try await Self.response(on: connection, "three live events") { $0.events.count >= 4 }
            #expect(stream.events.dropFirst().map(\.seq) == [1, 2, 3])
        }
    }

    @Test("refused streams get the routes' JSON error on either path, and a stream connection then closes")
    func refusalsMatchOnBothPaths() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let cases: [(path: String, apiKey: String?, status: Int, code: String)] = [
                ("/api/v1/stream", nil, 401, "unauthorized"),
                ("/api/v1/stream", "pk_not_a_key", 401, "unauthorized"),
                ("/api/v1/admin/stream", setup.apiKey, 403, "forbidden"),
                ("/api/v1/bookings/has%20space/stream", setup.apiKey, 422, "validation_failed"),
            ]
            for refused in cases {
                // First request of a connection: the event-loop path, which closes after answering.
                let fresh = try await RawConnection.open(port: live.port)
                try await fresh.send(Self.streamRequest(refused.path, apiKey: refused.apiKey))
                let direct = try await Self.response(on: fresh, "the refusal of \(refused.path)") { $0.complete }
                _ = try await fresh.wait("the connection to close after the refusal") { _, closed in closed ? () : nil }
                await fresh.close()

                // After another request on the same connection: Hummingbird's router.
                let reused = try await RawConnection.open(port: live.port)
                try await reused.send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
                _ = try await Self.response(on: reused, "the health answer") { $0.complete }
                reused.discardReceived()
                try await reused.send(Self.streamRequest(refused.path, apiKey: refused.apiKey))
                let routed = try await Self.response(on: reused, "the routed refusal of \(refused.path)") { $0.complete }
                await reused.close()

                for (path, response) in [("event loop", direct), ("router", routed)] {
                    #expect(response.status == refused.status, "\(refused.path) via the \(path): \(response.statusLine)")
                    #expect(response.headers["content-type"]?.hasPrefix("application/json") == true)
                    let envelope = try? JSONSerialization.jsonObject(with: Data(response.body.utf8)) as? [String: Any]
                    let code = (envelope?["error"] as? [String: Any])?["code"] as? String
                    #expect(code == refused.code, "\(refused.path) via the \(path): \(response.body)")
                }
                #expect(direct.body == routed.body, "\(refused.path): the same message on both paths")
            }
        }
    }

    @Test("a client that gives up before its request is complete is closed, not kept waiting",
          arguments: ["", "GET /api/v1/str", "GET /api/v1/stream HTTP/1.1\r\nHost: localhost\r\n"])
    func abandonedRequestCloses(sent: String) async throws {
        try await LiveNode.run { live in
            let connection = try await RawConnection.open(port: live.port)
            defer { Task { await connection.close() } }
            if !sent.isEmpty { try await connection.send(sent) }
            try await connection.finishSending()
            // Left open, such a connection also held up the server's graceful shutdown for ever.
            _ = try await connection.wait("the server to close the abandoned connection") { _, closed in closed ? () : nil }
        }
    }

    @Test("clients that leave while their stream opens leave no subscription behind")
    func leavingWhileOpeningLeaksNothing() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            for _ in 0..<20 {
                let connection = try await RawConnection.open(port: live.port)
                try await connection.send(Self.streamRequest("/api/v1/stream", apiKey: setup.apiKey))
                await connection.close()
            }
            let deadline = ContinuousClock.now + .seconds(20)
            while live.node.hub.subscriberCount > 0, ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(live.node.hub.subscriberCount == 0, "subscriptions of streams whose clients left")
        }
    }

    @Test("a stream request with an unreadable head is answered 400 in the JSON error shape, and closed")
    func unreadableHead() async throws {
        try await LiveNode.run { live in
            let connection = try await RawConnection.open(port: live.port)
            defer { Task { await connection.close() } }
            try await connection.send("GET /api/v1/stream HTTP/1.1\r\nHost: localhost\r\nNot a header\r\n\r\n")
            let answer = try await Self.response(on: connection, "the 400") { $0.complete }
            #expect(answer.status == 400)
            #expect(answer.body.contains(#""code":"bad_request""#), "\(answer.body)")
            _ = try await connection.wait("the connection to close") { _, closed in closed ? () : nil }
        }
    }

    @Test("a client that closes its side right after asking still gets the answer: the refusal, or the opening")
    func halfCloseWhileOpening() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let refused = try await RawConnection.open(port: live.port)
            try await refused.send(Self.streamRequest("/api/v1/stream", apiKey: nil))
            try await refused.finishSending()
            let refusal = try await Self.response(on: refused, "the 401") { $0.complete }
            #expect(refusal.status == 401)
            await refused.close()

            let opened = try await RawConnection.open(port: live.port)
            try await opened.send(Self.streamRequest("/api/v1/stream", apiKey: setup.apiKey))
            try await opened.finishSending()
            let stream = try await opened.wait("the opening, then the end of the stream") { text, closed in
                closed ? RawResponse(text) : nil
            }
            #expect(stream.status == 200)
            #expect(stream.events.first?.event == "snapshot")
            #expect(stream.complete, "the stream ends with the last chunk")
            await opened.close()
        }
    }

    @Test("a WebSocket upgrade of a stream path is Hummingbird's, not an SSE stream")
    func upgradeOfStreamPath() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let connection = try await RawConnection.open(port: live.port)
            defer { Task { await connection.close() } }
            try await connection.send("GET /api/v1/stream HTTP/1.1\r\nHost: localhost\r\nX-API-Key: \(setup.apiKey)\r\n"
                + "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                + "Sec-WebSocket-Version: 13\r\n\r\n")
            let answer = try await Self.response(on: connection, "the answer to the upgrade")
            #expect(answer.headers["content-type"]?.hasPrefix("text/event-stream") != true, "\(answer.statusLine)")
        }
    }

    @Test("a node that shuts down while streams are open and others are opening finishes shutting down, and no subscription is left")
    func shutdownWithStreams() async throws {
        let hub = Mutex<FanOutHub?>(nil)
        let connections = Mutex<[RawConnection]>([])
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            hub.withLock { $0 = live.node.hub }
            for opened in 0..<15 {
                let connection = try await RawConnection.open(port: live.port)
                connections.withLock { $0.append(connection) }
                try await connection.send(Self.streamRequest("/api/v1/stream", apiKey: setup.apiKey))
                // Five are live; ten are still opening (authenticating, subscribing) when the node stops.
                if opened < 5 { _ = try await Self.response(on: connection, "an opening") { !$0.events.isEmpty } }
            }
        }
        // Returning at all is the point: the streams let go before the pool and the listener stopped.
        check(hub.withLock { $0 }?.subscriberCount == 0)
        for connection in connections.withLock({ $0 }) {
            _ = try await connection.wait("the node to close the stream") { _, closed in closed ? () : nil }
            await connection.close()
        }
    }
}
