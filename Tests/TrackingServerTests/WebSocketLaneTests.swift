import Foundation
import Testing
import TrackingCore
import TrackingServer
import TrackingStore
import TrackingTestSupport

/// Live WebSocket events are written without waking the session's task while it waits
/// (`WebSocketLane`), and by the task otherwise. These check the hand-overs between the two:
/// events stay in order when the task writes between them, and a full socket still bounds
/// what the server holds for a client that stops reading (on a raw connection: a client
/// library reads whatever arrives).
@Suite("WebSocket: live events between the session's task and its lane", .timeLimit(.minutes(3)))
struct WebSocketLaneTests {
    @Test("events stay in seq order, without gaps or repeats, while the task answers pings between them")
    func orderAcrossHandOvers() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                var sockets: [WSConnection] = []
                var bases: [Int64] = []
                for _ in 0..<8 {
                    let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                    bases.append(try #require(try await socket.joinRoom("tenant:acme").seq))
                    sockets.append(socket)
                }
                // Each pong is written by the session's task, which then hands the socket back
                // to the lane; the fixes keep arriving meanwhile.
                let fixes = 400, pings = 150
                let open = sockets
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for poster in 0..<4 {
                        group.addTask {
                            for n in stride(from: poster, to: fixes, by: 4) {
                                try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
                            }
                        }
                    }
                    for socket in open {
                        group.addTask { for _ in 0..<pings { try await socket.ping() } }
                    }
                    try await group.waitForAll()
                }
                for (index, socket) in sockets.enumerated() {
                    let messages = try await socket.collect(fixes + pings, timeout: .seconds(60))
                    let updates = messages.filter { $0.type == "location_update" }
                    check(messages.filter { $0.type == "pong" }.count == pings, "socket \(index)")
                    check(updates.map(\.seq) == (1...Int64(fixes)).map { bases[index] + $0 },
                            "socket \(index): every event once, in seq order: \(updates.compactMap(\.seq).prefix(40))…")
                }
            }
        }
    }

    /// A client's text frame: masked, as RFC 6455 requires of clients (payload under 126 bytes).
    static func clientTextFrame(_ text: String) -> [UInt8] {
        let payload = Array(text.utf8)
        precondition(payload.count < 126)
        let mask: [UInt8] = [0x37, 0xfa, 0x21, 0x3d]
        return [0x81, 0x80 | UInt8(payload.count)] + mask + payload.enumerated().map { $0.element ^ mask[$0.offset % 4] }
    }

    @Test("a client that stops reading: the server queues no more than the socket's buffer: slow_consumer and close 1013, the events before it in order")
    func stalledReaderIsClosed() async throws {
        try await LiveNode.run({ $0.clientBufferSize = 64 }) { live in
            let setup = try await TestTenant.create(live.repository)
            let connection = try await RawConnection.open(port: live.port, receiveBuffer: 4_096)
            defer { Task { await connection.close() } }
            try await connection.send(WSSockets.upgradeRequest("/ws", port: live.port, apiKey: setup.apiKey))
            let (head, headEnd) = try await connection.waitBytes("the 101") { bytes, _ in
                bytes.firstRange(of: Array("\r\n\r\n".utf8)).map { (String(decoding: bytes[..<$0.lowerBound], as: UTF8.self), $0) }
            }
            try #require(head.hasPrefix("HTTP/1.1 101"), "\(head)")
            let frames = { (bytes: [UInt8]) in WSSockets.ServerFrame.parse(bytes[headEnd.upperBound...]) }
            let messages = { (bytes: [UInt8]) in
                frames(bytes).filter { $0.opcode == 0x1 }.map { WSMessage(text: String(decoding: $0.payload, as: UTF8.self)) }
            }

            try await connection.send(bytes: Self.clientTextFrame(#"{"action":"join","room":"tenant:acme"}"#))
            let opened = try await connection.waitBytes("the room's snapshot") { bytes, _ in
                messages(bytes).first { $0.type == "snapshot" }
            }
            let base = try #require(opened.seq)

            // Batches of 40 stay under the buffer of 64 one at a time: only a client that does
            // not read makes them pile up. Each fix carries 6 KB of attributes, so 75 batches are
            // 18 MB of frames, far more than the socket buffers and NIO's 64 KB hold.
            try await connection.reading(false)
            let batches = 75, size = 40
            try await live.postPaddedBatches(batches, of: size, apiKey: setup.apiKey)
            try await connection.reading(true)
            let received = try await connection.waitBytes("the close", timeout: .seconds(90)) { bytes, closed -> [WSSockets.ServerFrame]? in
                let all = frames(bytes)
                return all.contains { $0.opcode == 0x8 } || closed ? all : nil
            }
            // The closure stays out of `#require(…)`: inside it, the debug build ran this
            // closure for the `filter` below as well (it returned the Close frame alone),
            // a closure-discriminator miscompile of macro arguments (the class of swiftlang/swift
            // PR #74299).
            let closeFrame = received.first { $0.opcode == 0x8 }
            let close = try #require(closeFrame, "the server closes the socket it could not keep up with")
            #expect(close.payload.count >= 2 && Int(close.payload[0]) << 8 | Int(close.payload[1]) == 1013)
            let texts = received.filter { $0.opcode == 0x1 }.map { WSMessage(text: String(decoding: $0.payload, as: UTF8.self)) }
            #expect(texts.last?.type == "error" && texts.last?.code == "slow_consumer", "\(texts.suffix(1))")
            let updates = texts.filter { $0.type == "location_update" }
            #expect(updates.count < batches * size, "the backlog was dropped, not held: \(updates.count) of \(batches * size) arrived")
            check(updates.map(\.seq) == updates.indices.map { base + 1 + Int64($0) }, "what did arrive is in order, without gaps")
        }
    }
}
