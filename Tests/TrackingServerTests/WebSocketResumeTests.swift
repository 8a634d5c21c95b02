import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A client that reconnects resumes each room from the last seq it has: exactly the missed
/// events, in order, then live ones; a position that cannot be resumed gets a `reset`.
@Suite("WebSocket: resume after reconnect", .timeLimit(.minutes(3)))
struct WebSocketResumeTests {
    @Test("/ws: receive 5, disconnect, 7 posted meanwhile, reconnect with resume since the last seq → exactly those 7 in order, then live")
    func resumeTenantRoom() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let device = setup.device.id.uuidString.lowercased()
                let room = "tenant:acme"
                let first = try await ws.open("/ws?api_key=\(setup.apiKey)")
                let snapshot = try await first.joinRoom(room)
                let opened = try #require(snapshot.seq)
                for n in 0..<5 {
                    try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
                }
                let seen = try await first.collect(5)
                check(seen.map(\.seq) == (1...5).map { opened + Int64($0) })
                #expect(seen.map(\.fixIndex) == Array(0..<5))
                check(seen.allSatisfy { $0.room == room && $0.type == "location_update" && $0.deviceID == device }, "\(seen)")
                let k = try #require(seen.last?.seq)
                await first.close()

                for n in 5..<12 {
                    try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
                }
                let second = try await ws.open("/ws?api_key=\(setup.apiKey)")
                try await second.resume(room, since: k)
                _ = try await second.expect("joined", room: room)
                let replay = try await second.collect(7)
                check(replay.allSatisfy { $0.type == "location_update" && $0.room == room }, "a resume replays, no snapshot: \(replay)")
                check(replay.map(\.seq) == (1...7).map { k + Int64($0) })
                #expect(replay.map(\.fixIndex) == Array(5..<12))

                try await live.postPositions(Fixes.object(12), apiKey: setup.apiKey, expecting: 1)
                let next = try await second.next("the first live event after the replay")
                #expect(next.type == "location_update" && next.seq == k + 8 && next.fixIndex == 12, "\(next)")
                try await second.expectQuiet("no duplicate of a replayed event follows")
            }
        }
    }

    @Test("resume on the same socket re-opens the room from the given seq; since as a string works too")
    func resumeOnOpenSocket() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let room = "tenant:acme"
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                try await socket.joinRoom(room)
                try await live.postPositions(Fixes.array(0..<4), apiKey: setup.apiKey, expecting: 4)
                let seen = try await socket.collect(4)
                #expect(seen.map(\.fixIndex) == Array(0..<4))
                let second = try #require(seen[1].seq)

                try await socket.send(#"{"action":"resume","room":"\#(room)","since":"\#(second)"}"#)
                _ = try await socket.expect("joined", room: room)
                let replay = try await socket.collect(2)
                #expect(replay.map(\.seq) == [second + 1, second + 2])
                #expect(replay.map(\.fixIndex) == [2, 3])
                try await socket.expectQuiet("the replay holds only what came after since")
                try await live.postPositions(Fixes.object(4), apiKey: setup.apiKey, expecting: 1)
                let next = try await socket.next("the live event after the resume")
                #expect(next.fixIndex == 4 && next.seq == second + 3, "one copy of each event: \(next)")
                try await socket.expectQuiet("the room was re-opened, not joined twice")
            }
        }
    }

    @Test("resume with a since that cannot be resumed (garbage, from the future, negative) answers a reset; without since an error",
          arguments: [(#""abc""#, "invalid_event_id"), ("999999999", "unknown_event_id"), ("-1", "invalid_event_id")])
    func resumeReset(since: String, reason: String) async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                try await live.postPositions(Fixes.array(0..<3), apiKey: setup.apiKey, expecting: 3)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                try await socket.send(#"{"action":"resume","room":"tenant:acme","since":\#(since)}"#)
                _ = try await socket.expect("joined", room: "tenant:acme")
                let reset = try await socket.expect("reset", room: "tenant:acme")
                #expect(reset.object["reason"] as? String == reason, "\(reset)")
                #expect(reset.seq == 3)
                let positions = reset.object["positions"] as? [[String: Any]] ?? []
                #expect(positions.map(\.fixIndex) == [2], "the reset carries the latest position: \(reset)")
                try await live.postPositions(Fixes.object(3), apiKey: setup.apiKey, expecting: 1)
                let update = try await socket.next("the live event after the reset")
                #expect(update.type == "location_update" && update.seq == 4, "\(update)")

                try await socket.send(#"{"action":"resume","room":"tenant:acme"}"#)
                let error = try await socket.expect("error")
                #expect(error.code == "room_error" && error.room == "tenant:acme", "\(error)")
                try await socket.expectQuiet("the socket stays usable after the error")
            }
        }
    }

    @Test("/ws/tracking/{id}?since=K: exactly the trip's missed events, then its current status, then live ones up to the final status")
    func resumeTrackingSocket() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let device = setup.device.id.uuidString.lowercased()
                let admin = try await live.user(.admin, in: setup.tenant)
                let (_, otherKey) = try await live.repository.createDevice(tenant: setup.tenant, name: "van-2", group: "default", grade: 0)
                #expect(try await TripAPI.accept(live, "bk-1", apiKey: setup.apiKey).status == 201)
                let room = "booking:bk-1"

                let first = try await ws.open("/ws/tracking/bk-1", bearer: admin.accessToken)
                _ = try await first.expect("joined", room: room)
                _ = try await first.expect("snapshot", room: room)
                _ = try await first.expect("status", room: room)
                for n in 0..<2 {
                    try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
                }
                let seen = try await first.collect(3)
                #expect(seen.map(\.type) == ["location_update", "status", "location_update"], "\(seen)")
                let k = try #require(seen.last?.seq)
                await first.close()

                // Missed: two fixes of the trip, one of another device between them.
                try await live.postPositions(Fixes.object(2), apiKey: setup.apiKey, expecting: 1)
                try await live.postPositions(Fixes.object(50), apiKey: otherKey, expecting: 1)
                try await live.postPositions(Fixes.object(3), apiKey: setup.apiKey, expecting: 1)

                let second = try await ws.open("/ws/tracking/bk-1?since=\(k)&access_token=\(admin.accessToken)")
                _ = try await second.expect("joined", room: room)
                let replay = try await second.collect(2)
                WebSocketTrackingTests.expectUpdate(replay[0], fix: 2, room: room, booking: "bk-1", device: device)
                WebSocketTrackingTests.expectUpdate(replay[1], fix: 3, room: room, booking: "bk-1", device: device)
                #expect(replay.map(\.seq) == [k + 1, k + 3], "the other device's fix (k + 2) is not in the booking's log")
                let current = try await second.expect("status", room: room)
                #expect(current.object["current"] as? Bool == true && current.status == "in_progress", "\(current)")
                #expect(current.object["point_count"] as? Int == 4)

                try await live.postPositions(Fixes.object(4), apiKey: setup.apiKey, expecting: 1)
                let live4 = try await second.next("the live fix after the resume")
                WebSocketTrackingTests.expectUpdate(live4, fix: 4, room: room, booking: "bk-1", device: device)
                #expect(live4.seq == k + 4)
                #expect(try await TripAPI.complete(live, "bk-1", bearer: admin.accessToken).status == 200)
                let final = try await second.next("the completed status")
                #expect(final.status == "completed" && final.seq == k + 5, "\(final)")
                let closed = try await second.closed()
                #expect(closed.code == .normalClosure, "\(closed.end)")
                #expect(second.inbox.untaken.isEmpty, "\(second.inbox.untaken)")
            }
        }
    }

    @Test("/ws/tracking/{id}?since=garbage opens with a reset")
    func trackingSinceGarbage() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                #expect(try await TripAPI.accept(live, "bk-1", apiKey: setup.apiKey).status == 201)
                try await live.postPositions(Fixes.object(0), apiKey: setup.apiKey, expecting: 1)
                let socket = try await ws.open("/ws/tracking/bk-1?since=zzz", apiKey: setup.apiKey)
                _ = try await socket.expect("joined", room: "booking:bk-1")
                let reset = try await socket.expect("reset", room: "booking:bk-1")
                #expect(reset.object["reason"] as? String == "invalid_event_id")
                #expect((reset.object["positions"] as? [[String: Any]])?.map(\.fixIndex) == [0], "\(reset)")
                #expect(try await socket.expect("status", room: "booking:bk-1").status == "in_progress")
            }
        }
    }
}
