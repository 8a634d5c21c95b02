import Foundation
import NIOWebSocket
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// `GET /ws/tracking/{bookingId}` with a real WebSocket client: the trip's room opens with
/// `joined`, the snapshot and the current status, then pushes location updates and status
/// changes, and the server closes the socket after the trip's final status.
@Suite("WebSocket: trip tracking socket", .timeLimit(.minutes(3)))
struct WebSocketTrackingTests {
    /// Requires `message` to be the location update of fix `n` (see `Fixes`) in `room`.
    static func expectUpdate(_ message: WSMessage, fix n: Int, room: String, booking: String?, device: String,
                             sourceLocation: SourceLocation = #_sourceLocation) {
        let object = message.object
        #expect(message.type == "location_update", "\(message)", sourceLocation: sourceLocation)
        #expect(message.room == room, "\(message)", sourceLocation: sourceLocation)
        #expect(message.fixIndex == n, "\(message)", sourceLocation: sourceLocation)
        #expect(message.bookingID == booking, "\(message)", sourceLocation: sourceLocation)
        #expect(message.deviceID == device, "\(message)", sourceLocation: sourceLocation)
        #expect(message.seq != nil, "an update carries its seq: \(message)", sourceLocation: sourceLocation)
        let latitude = object["latitude"] as? Double
        let longitude = object["longitude"] as? Double
        check(latitude.map { abs($0 - Fixes.latitude(n)) < 1e-7 } == true, "\(message)", sourceLocation: sourceLocation)
        check(longitude.map { abs($0 - Fixes.longitude(n)) < 1e-7 } == true, "\(message)", sourceLocation: sourceLocation)
        let time = isoDate(object["timestamp"])
        check(time.map { abs($0.timeIntervalSince(Fixes.fixTime(n))) < 0.002 } == true, "\(message)", sourceLocation: sourceLocation)
    }

    @Test("pushes location_update (booking_id, latitude, longitude, timestamp, seq) and status; closes after completed, that status last")
    func pushesThenClosesOnCompletion() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let device = setup.device.id.uuidString.lowercased()
                let admin = try await live.user(.admin, in: setup.tenant)
                #expect(try await TripAPI.accept(live, "bk-1", apiKey: setup.apiKey).status == 201)

                let room = "booking:bk-1"
                let socket = try await ws.open("/ws/tracking/bk-1?access_token=\(admin.accessToken)")
                _ = try await socket.expect("joined", room: room)
                let snapshot = try await socket.expect("snapshot", room: room)
                #expect(snapshot.snapshotDevices.isEmpty, "no position on the trip yet: \(snapshot)")
                let opened = try #require(snapshot.seq)
                let current = try await socket.expect("status", room: room)
                #expect(current.object["current"] as? Bool == true, "\(current)")
                #expect(current.status == "accepted")
                #expect(current.bookingID == "bk-1")
                #expect(current.deviceID == device)

                // One fix per request, without booking_id: the running trip takes them.
                for n in 0..<3 {
                    try await live.postPositions(Fixes.object(n), apiKey: setup.apiKey, expecting: 1)
                }
                let pushed = try await socket.collect(4)
                #expect(pushed.map(\.type) == ["location_update", "status", "location_update", "location_update"], "\(pushed)")
                Self.expectUpdate(pushed[0], fix: 0, room: room, booking: "bk-1", device: device)
                Self.expectUpdate(pushed[2], fix: 1, room: room, booking: "bk-1", device: device)
                Self.expectUpdate(pushed[3], fix: 2, room: room, booking: "bk-1", device: device)
                #expect(pushed[1].status == "in_progress", "the first point starts the trip: \(pushed[1])")
                #expect(pushed[1].object["previous_status"] as? String == "accepted")
                #expect(pushed[1].room == room)
                let seqs = pushed.compactMap(\.seq)
                #expect(seqs.count == 4 && seqs == seqs.sorted() && Set(seqs).count == 4, "\(seqs)")
                check(seqs.first.map { $0 > opened } == true)

                let completed = try await TripAPI.complete(live, "bk-1", bearer: admin.accessToken)
                #expect(completed.status == 200, "\(completed.body)")
                let final = try await socket.next("the completed status")
                #expect(final.type == "status" && final.status == "completed", "\(final)")
                #expect(final.room == room)
                #expect(final.object["previous_status"] as? String == "in_progress")
                check(final.seq.map { $0 > seqs.last! } == true)
                #expect(final.object["point_count"] as? Int == 3, "\(final)")

                let closed = try await socket.closed()
                #expect(closed.code == .normalClosure, "the server closes the socket normally after the final status: \(closed.end)")
                #expect(socket.inbox.untaken.isEmpty, "the final status is the last message: \(socket.inbox.untaken)")
                #expect(socket.inbox.all.last?.status == "completed")
            }
        }
    }

    @Test("a cancelled trip: the cancelled status comes last and the socket closes")
    func closesOnCancel() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let admin = try await live.user(.admin, in: setup.tenant)
                #expect(try await TripAPI.accept(live, "bk-2", apiKey: setup.apiKey).status == 201)
                // Credentials in the X-API-Key header this time (the device itself watches).
                let socket = try await ws.open("/ws/tracking/bk-2", apiKey: setup.apiKey)
                _ = try await socket.expect("joined", room: "booking:bk-2")
                _ = try await socket.expect("snapshot", room: "booking:bk-2")
                #expect(try await socket.expect("status", room: "booking:bk-2").status == "accepted")

                #expect(try await TripAPI.cancel(live, "bk-2", bearer: admin.accessToken).status == 200)
                let final = try await socket.next("the cancelled status")
                #expect(final.type == "status" && final.status == "cancelled", "\(final)")
                let closed = try await socket.closed()
                #expect(closed.code == .normalClosure, "\(closed.end)")
                #expect(socket.inbox.untaken.isEmpty, "nothing after the final status: \(socket.inbox.untaken)")
            }
        }
    }

    @Test("a trip that has already ended: joined, snapshot with its last position, its final status, then the server closes")
    func endedTripClosesAfterStatus() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let admin = try await live.user(.admin, in: setup.tenant)
                #expect(try await TripAPI.accept(live, "bk-3", apiKey: setup.apiKey).status == 201)
                try await live.postPositions(Fixes.array(0..<3), apiKey: setup.apiKey, expecting: 3)
                #expect(try await TripAPI.complete(live, "bk-3", bearer: admin.accessToken).status == 200)

                let socket = try await ws.open("/ws/tracking/bk-3", bearer: admin.accessToken)
                _ = try await socket.expect("joined", room: "booking:bk-3")
                let snapshot = try await socket.expect("snapshot", room: "booking:bk-3")
                let positions = snapshot.object["positions"] as? [[String: Any]] ?? []
                #expect(positions.map(\.fixIndex) == [2], "the snapshot holds the trip's last position: \(snapshot)")
                let status = try await socket.expect("status", room: "booking:bk-3")
                #expect(status.status == "completed")
                #expect(status.object["current"] as? Bool == true)
                let closed = try await socket.closed()
                #expect(closed.code == .normalClosure, "\(closed.end)")
                #expect(socket.inbox.untaken.isEmpty, "\(socket.inbox.untaken)")
            }
        }
    }

    @Test("positions of other bookings and devices do not reach a trip socket; status events of other trips neither")
    func onlyThisTrip() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let admin = try await live.user(.admin, in: setup.tenant)
                let (other, otherKey) = try await live.repository.createDevice(tenant: setup.tenant, name: "van-2", group: "default", grade: 0)
                #expect(try await TripAPI.accept(live, "bk-a", apiKey: setup.apiKey).status == 201)
                #expect(try await TripAPI.accept(live, "bk-b", apiKey: otherKey).status == 201)

                let socket = try await ws.open("/ws/tracking/bk-a", bearer: admin.accessToken)
                _ = try await socket.expect("joined")
                _ = try await socket.expect("snapshot")
                _ = try await socket.expect("status")

                try await live.postPositions(Fixes.object(10), apiKey: otherKey, expecting: 1)  // bk-b
                try await live.postPositions(Fixes.object(11), apiKey: setup.apiKey, expecting: 1)  // bk-a
                #expect(try await TripAPI.cancel(live, "bk-b", bearer: admin.accessToken).status == 200)
                try await live.postPositions(Fixes.object(12), apiKey: setup.apiKey, expecting: 1)  // bk-a

                let pushed = try await socket.collect(3)
                #expect(pushed.map(\.type) == ["location_update", "status", "location_update"], "\(pushed)")
                #expect(pushed.map(\.fixIndex) == [11, nil, 12])
                check(pushed.allSatisfy { $0.bookingID == "bk-a" }, "\(pushed)")
                try await socket.expectQuiet("bk-b's fix and cancel are not for this socket")
                #expect(other.id != setup.device.id)
            }
        }
    }
}
