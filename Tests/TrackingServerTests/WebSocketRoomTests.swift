import Foundation
import NIOWebSocket
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// `/ws` as a multiplexed socket: several rooms at once, each event tagged with its room,
/// `leave` stopping a room, `ping`/`pong`, bad messages answered with `error` on a socket that
/// stays usable, and a socket in no room closed when idle.
@Suite("WebSocket: rooms, messages and idle sockets", .timeLimit(.minutes(3)))
struct WebSocketRoomTests {
    @Test("tenant room + booking room on one socket: each event once per room, tagged; leave stops that room only")
    func multiRoom() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let admin = try await live.user(.admin, in: setup.tenant)
                let (other, otherKey) = try await live.repository.createDevice(tenant: setup.tenant, name: "van-2", group: "default", grade: 0)
                #expect(try await TripAPI.accept(live, "bk-1", apiKey: setup.apiKey).status == 201)

                let socket = try await ws.open("/ws", bearer: admin.accessToken)
                let tenantSnapshot = try await socket.joinRoom("tenant:acme")
                let bookingSnapshot = try await socket.joinRoom("booking:bk-1")
                #expect(tenantSnapshot.seq == 1 && bookingSnapshot.seq == 1, "both open after the accepted status: \(tenantSnapshot) \(bookingSnapshot)")

                // Fix 0 on the trip: location_update and the in_progress status, in both rooms.
                try await live.postPositions(Fixes.object(0), apiKey: setup.apiKey, expecting: 1)
                let first = try await socket.collect(4)
                for room in ["tenant:acme", "booking:bk-1"] {
                    let inRoom = first.filter { $0.room == room }
                    #expect(inRoom.map(\.type) == ["location_update", "status"], "\(room): \(first)")
                    #expect(inRoom.map(\.seq) == [2, 3], "\(room): \(first)")
                    #expect(inRoom.first?.fixIndex == 0 && inRoom.first?.bookingID == "bk-1")
                }
                check(first.allSatisfy { $0.text.hasPrefix(#"{"room":""#) }, "room is the first member of every event: \(first)")

                // A fix of another device (no trip): the tenant room only.
                try await live.postPositions(Fixes.object(1), apiKey: otherKey, expecting: 1)
                let tenantOnly = try await socket.next("the other device's fix")
                #expect(tenantOnly.room == "tenant:acme" && tenantOnly.fixIndex == 1 && tenantOnly.deviceID == other.id.uuidString.lowercased(),
                        "\(tenantOnly)")
                try await socket.expectQuiet("the booking room does not get it")

                // Joining a room twice answers joined/already without a second snapshot.
                try await socket.join("tenant:acme")
                let again = try await socket.expect("joined", room: "tenant:acme")
                #expect(again.object["already"] as? Bool == true && again.seq == 4, "\(again)")

                try await socket.leave("booking:bk-1")
                let left = try await socket.expect("left", room: "booking:bk-1")
                #expect(left.object.count == 2, "\(left)")
                try await live.postPositions(Fixes.object(2), apiKey: setup.apiKey, expecting: 1)
                let after = try await socket.next("fix 2 after leaving the booking room")
                #expect(after.room == "tenant:acme" && after.fixIndex == 2 && after.bookingID == "bk-1", "\(after)")
                try await socket.expectQuiet("nothing more for the booking room once left")

                // Leaving the tenant room too: nothing at all, the socket still answers.
                try await socket.leave("tenant:acme")
                _ = try await socket.expect("left", room: "tenant:acme")
                try await live.postPositions(Fixes.object(3), apiKey: setup.apiKey, expecting: 1)
                try await socket.expectQuiet("in no room")
                // Back in: a fresh snapshot with the latest position.
                let rejoined = try await socket.joinRoom("tenant:acme")
                #expect(rejoined.snapshotDevices.count == 2)
                #expect(rejoined.seq == 6, "\(rejoined)")
            }
        }
    }

    @Test("a device room gets only that device's events, tagged device:<id>")
    func deviceRoom() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let fleet = try await ScopedFleet.create(live)
                let admin = try await live.user(.admin, in: fleet.tenant)
                let socket = try await ws.open("/ws", bearer: admin.accessToken)
                let room = "device:\(fleet.van5.id)"
                let snapshot = try await socket.joinRoom(room)
                #expect(snapshot.snapshotDevices == [fleet.van5.id], "\(snapshot)")
                try await fleet.postRound(live, from: 10)
                let update = try await socket.next("van5's fix")
                #expect(update.room == room && update.deviceID == fleet.van5.id && update.fixIndex == 11, "\(update)")
                try await socket.expectQuiet("van1's and truck2's fixes are not in van5's room")

                // The tenant room shares van5's topic: leaving it keeps the device room going.
                try await socket.joinRoom("tenant:acme")
                try await socket.leave("tenant:acme")
                _ = try await socket.expect("left", room: "tenant:acme")
                try await fleet.postRound(live, from: 20)
                let still = try await socket.next("van5's fix after leaving the tenant room")
                #expect(still.room == room && still.fixIndex == 21, "\(still)")
                try await socket.expectQuiet("only the device room is left")
            }
        }
    }

    @Test("ping → pong; bad messages → error (bad_message / room_error) and the socket stays usable")
    func pingAndBadMessages() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                try await socket.ping()
                #expect(try await socket.next("the pong").text == #"{"type":"pong"}"#)

                let bad: [(String, String, String?)] = [
                    ("not json at all", "bad_message", nil),
                    ("[1,2,3]", "bad_message", nil),
                    (#"{"room":"tenant:acme"}"#, "bad_message", nil),
                    (#"{"action":42}"#, "bad_message", nil),
                    (#"{"action":"fly","room":"tenant:acme"}"#, "bad_message", nil),
                    (#"{"action":"join"}"#, "room_error", nil),
                    (#"{"action":"join","room":""}"#, "room_error", nil),
                    (#"{"action":"join","room":"\#(String(repeating: "x", count: 200))"}"#, "room_error", nil),
                    (#"{"action":"leave","room":"tenant:acme"}"#, "room_error", "tenant:acme"),
                    ("", "bad_message", nil),
                ]
                for (text, code, room) in bad {
                    try await socket.send(text)
                    let error = try await socket.next("the error for \(text.prefix(40))")
                    #expect(error.type == "error" && error.code == code, "\(text.prefix(40)): \(error)")
                    #expect(error.room == room, "\(text.prefix(40)): \(error)")
                    #expect((error.object["message"] as? String)?.isEmpty == false, "\(error)")
                }
                try await socket.sendBinary([0x7B, 0x7D])
                let binary = try await socket.next("the error for a binary message")
                #expect(binary.type == "error" && binary.code == "bad_message", "\(binary)")

                try await socket.joinRoom("tenant:acme")
                try await live.postPositions(Fixes.object(5), apiKey: setup.apiKey, expecting: 1)
                let update = try await socket.next("the update after the errors")
                #expect(update.type == "location_update" && update.fixIndex == 5, "\(update)")
                try await socket.expectQuiet("still answering")
                #expect(socket.inbox.end == nil, "the socket is still open")
                check(socket.inbox.all.allSatisfy { $0.isObject }, "every server message is a JSON object")
            }
        }
    }

    @Test("a socket holds at most 50 rooms; the 51st join is refused, a leave makes room")
    func roomLimit() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                for k in 0..<50 { try await socket.joinRoom("booking:room-\(k)") }
                try await socket.join("booking:room-50")
                let refused = try await socket.next("the refusal of the 51st room")
                #expect(refused.type == "error" && refused.code == "room_error" && refused.room == "booking:room-50", "\(refused)")
                try await socket.leave("booking:room-0")
                _ = try await socket.expect("left", room: "booking:room-0")
                try await socket.joinRoom("booking:room-50")
            }
        }
    }

    @Test("idle: a socket in no room (never joined, or all left) is told and closed after webSocketIdleSeconds; one in a room stays open")
    func idleSocket() async throws {
        // 5 s, not less: beside the whole suite a socket's open and join took over 2 s once,
        // and the socket meant to stay busy was closed as idle before it joined.
        try await LiveNode.run({ $0.webSocketIdleSeconds = 5 }) { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let busy = try await ws.open("/ws", apiKey: setup.apiKey)
                try await busy.joinRoom("tenant:acme")
                let idle = try await ws.open("/ws", apiKey: setup.apiKey)
                let leaver = try await ws.open("/ws", apiKey: setup.apiKey)
                try await leaver.joinRoom("tenant:acme")
                try await leaver.leave("tenant:acme")
                _ = try await leaver.expect("left")

                for socket in [idle, leaver] {
                    let notice = try await socket.next("the idle notice", timeout: .seconds(30))
                    #expect(notice.type == "error" && notice.code == "idle", "\(notice)")
                    let closed = try await socket.closed(timeout: .seconds(30))
                    #expect(closed.code == .normalClosure, "\(closed.end)")
                    #expect(socket.inbox.untaken.isEmpty, "\(socket.inbox.untaken)")
                }

                // The busy socket outlived the idle timeout (the idle one took longer than 5 s to go).
                try await busy.expectQuiet("a socket in a room is not idle")
                try await live.postPositions(Fixes.object(1), apiKey: setup.apiKey, expecting: 1)
                #expect(try await busy.next("the update").fixIndex == 1)
            }
        }
    }

    @Test("subscriptions follow the rooms: one per topic while joined, released on leave and when the client closes")
    func subscriptionsReleased() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let fleet = try await ScopedFleet.create(live)
                let admin = try await live.user(.admin, in: fleet.tenant)
                #expect(live.node.hub.subscriberCount == 0)
                let socket = try await ws.open("/ws", bearer: admin.accessToken)
                try await socket.joinRoom("tenant:acme")
                try await socket.joinRoom("device:\(fleet.van1.id)")  // the same topic as the tenant room
                try await socket.joinRoom("booking:bk-9")
                #expect(live.node.hub.subscriberCount == 2, "tenant topic once, booking topic once")
                try await socket.leave("booking:bk-9")
                _ = try await socket.expect("left")
                try await socket.expectQuiet("after leave")
                #expect(live.node.hub.subscriberCount == 1)
                try await socket.leave("tenant:acme")
                _ = try await socket.expect("left")
                try await socket.expectQuiet("after leave")
                #expect(live.node.hub.subscriberCount == 1, "the device room still needs the tenant topic")

                await socket.close()
                _ = try await live.health(until: { ($0["subscribers"] as? Int) == 0 })
                #expect(live.node.hub.subscriberCount == 0, "a closed socket leaves no subscription behind")
            }
        }
    }

    @Test("a socket too slow for its buffer is told slow_consumer and closed with 1013; it resumes without loss")
    func slowConsumer() async throws {
        try await LiveNode.run({ $0.clientBufferSize = 16 }) { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                let opened = try #require(try await socket.joinRoom("tenant:acme").seq)
                // 200 fixes in one request: one doorbell, read from the log and pushed at once,
                // more than the socket's buffer holds.
                try await live.postPositions(Fixes.array(0..<200), apiKey: setup.apiKey, expecting: 200)
                let closed = try await socket.closed()
                #expect(closed.code == .unknown(1013), "\(closed.end)")
                let received = socket.inbox.untaken
                #expect(received.last?.type == "error" && received.last?.code == "slow_consumer", "\(received.suffix(2))")
                let updates = received.filter { $0.type == "location_update" }
                #expect(updates.count < 200, "the backlog was dropped: \(updates.count)")
                check(updates.map(\.seq) == updates.indices.map { opened + 1 + Int64($0) }, "what did arrive is in order, without gaps")

                let last = updates.last?.seq ?? opened
                let again = try await ws.open("/ws", apiKey: setup.apiKey)
                try await again.resume("tenant:acme", since: last)
                _ = try await again.expect("joined")
                let replay = try await again.collect(200 - updates.count)
                check(replay.map(\.seq) == replay.indices.map { last + 1 + Int64($0) })
                #expect(replay.last?.fixIndex == 199)
            }
        }
    }

    @Test("messages larger than one frame (a 40 KB attribute, live and in a snapshot) arrive whole and intact")
    func largeMessages() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let socket = try await ws.open("/ws", apiKey: setup.apiKey)
                try await socket.joinRoom("tenant:acme")
                let blob = String(repeating: "aü€𝄞", count: 4_000)  // 1-, 2-, 3- and 4-byte characters, ~40 KB
                let body = Fixes.object(7, overriding: ["attributes": #"{"i":7,"blob":"\#(blob)"}"#])
                try await live.postPositions(body, apiKey: setup.apiKey, expecting: 1)
                let update = try await socket.next("the large update")
                #expect(update.text.utf8.count > 40_000)
                #expect(update.type == "location_update" && update.fixIndex == 7, "\(update)")
                #expect((update.object["attributes"] as? [String: Any])?["blob"] as? String == blob, "the blob arrives intact")

                let second = try await ws.open("/ws", apiKey: setup.apiKey)
                let snapshot = try await second.joinRoom("tenant:acme")
                let position = try #require((snapshot.object["positions"] as? [[String: Any]])?.first)
                #expect((position["attributes"] as? [String: Any])?["blob"] as? String == blob, "the snapshot carries it intact")
                try await second.expectQuiet("the socket is in sync after the large snapshot")
            }
        }
    }
}
