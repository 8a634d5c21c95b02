import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Who may open which socket and join which room: refused sockets get one error message and a
/// close code of 4000 + the HTTP status, refused rooms an `error` message on a socket that stays open, and what a
/// socket shows is limited to what its viewer may see.
@Suite("WebSocket: access, tenants and scopes", .timeLimit(.minutes(3)))
struct WebSocketAccessTests {
    @Test("refused sockets: another tenant's booking, a booking without trip and an unknown path close 4404, bad or no credentials 4401; plain GET answers the JSON error or 426")
    func refusedUpgrades() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let acme = try await TestTenant.create(live.repository, id: "acme")
                let other = try await TestTenant.create(live.repository, id: "other")
                let admin = try await live.user(.admin, in: acme.tenant)
                let otherAdmin = try await live.user(.admin, in: other.tenant)
                #expect(try await TripAPI.accept(live, "bk-x", apiKey: other.apiKey).status == 201)
                #expect(try await TripAPI.accept(live, "bk-own", apiKey: acme.apiKey).status == 201)

                try await ws.refusal("/ws/tracking/bk-x", bearer: admin.accessToken)
                    .expect(status: 404, code: "not_found", "another tenant's booking")
                try await ws.refusal("/ws/tracking/bk-x", apiKey: acme.apiKey)
                    .expect(status: 404, code: "not_found", "another tenant's booking, device key")
                let refusedNone = try await ws.refusal("/ws/tracking/bk-none", bearer: admin.accessToken)
                refusedNone.expect(status: 404, code: "not_found", "a booking without a trip")
                let refusedOther = try await ws.refusal("/ws/tracking/bk-x?access_token=\(admin.accessToken)")
                #expect(refusedOther.message.object["message"] as? String
                            == (refusedNone.message.object["message"] as? String)?.replacingOccurrences(of: "bk-none", with: "bk-x"),
                        "another tenant's booking reads like a missing one: \(refusedOther.message) / \(refusedNone.message)")
                try await ws.refusal("/ws?access_token=not-a-token").expect(status: 401, code: "unauthorized", "a bad token")
                try await ws.refusal("/ws").expect(status: 401, code: "unauthorized", "no credentials")
                try await ws.refusal("/ws/tracking/bk-own?api_key=pgt_" + String(repeating: "0", count: 64))
                    .expect(status: 401, code: "unauthorized", "an unknown key")
                try await ws.refusal("/ws/tracking/" + String(repeating: "x", count: 300), bearer: admin.accessToken)
                    .expect(status: 404, code: "not_found", "a booking id that cannot exist")
                try await ws.refusal("/socket.io/", bearer: admin.accessToken)
                    .expect(status: 404, code: "not_found", "a path that is no WebSocket endpoint")
                try await ws.refusal("/ws/rooms/x", bearer: admin.accessToken)
                    .expect(status: 404, code: "not_found", "an unknown path under /ws")

                // A trip on a device outside a scoped dispatcher's scope reads like a missing one.
                let fleetVan = try await live.repository.createDevice(tenant: acme.tenant, name: "van-9", group: "vans", grade: 1)
                #expect(try await TripAPI.accept(live, "bk-van", apiKey: fleetVan.1).status == 201)
                let dispatcher = try await live.user(.dispatcher, in: acme.tenant, scope: .upTo(["trucks": 1_000]))
                try await ws.refusal("/ws/tracking/bk-van", bearer: dispatcher.accessToken)
                    .expect(status: 404, code: "not_found", "a trip outside the dispatcher's scope")

                // A plain GET gets the JSON error with its HTTP status, or 426 when it was allowed.
                ValidationTests.expectError(try await live.upgradeRequest("/ws/tracking/bk-x", bearer: admin.accessToken, upgrade: false),
                                            status: 404, code: "not_found", "plain GET of another tenant's booking")
                ValidationTests.expectError(try await live.upgradeRequest("/ws", upgrade: false),
                                            status: 401, code: "unauthorized", "plain GET without credentials")
                ValidationTests.expectError(try await live.upgradeRequest("/ws", bearer: admin.accessToken, upgrade: false),
                                            status: 426, code: "upgrade_required", "plain GET /ws")
                ValidationTests.expectError(try await live.upgradeRequest("/ws/tracking/bk-own", apiKey: acme.apiKey, upgrade: false),
                                            status: 426, code: "upgrade_required", "plain GET /ws/tracking")

                // The owning tenant's admin may open it.
                let socket = try await ws.open("/ws/tracking/bk-x", bearer: otherAdmin.accessToken)
                _ = try await socket.expect("joined", room: "booking:bk-x")
            }
        }
    }

    @Test("credentials as Authorization: Bearer, X-API-Key, ?access_token= and ?api_key= all open /ws")
    func credentialForms() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let admin = try await live.user(.admin, in: setup.tenant)
                let sockets = [
                    try await ws.open("/ws", bearer: admin.accessToken),
                    try await ws.open("/ws", apiKey: setup.apiKey),
                    try await ws.open("/ws?access_token=\(admin.accessToken)"),
                    try await ws.open("/ws?api_key=\(setup.apiKey)"),
                ]
                for socket in sockets { try await socket.joinRoom("tenant:acme") }
                try await live.postPositions(Fixes.object(1), apiKey: setup.apiKey, expecting: 1)
                for socket in sockets {
                    let update = try await socket.next("the update on \(socket.url)")
                    #expect(update.type == "location_update" && update.fixIndex == 1, "\(update)")
                }
            }
        }
    }

    @Test("/ws: another tenant's room, its device, a malformed or unknown room → error with the room; the socket stays open and sees only its tenant")
    func foreignRooms() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let acme = try await TestTenant.create(live.repository, id: "acme")
                let other = try await TestTenant.create(live.repository, id: "other")
                let admin = try await live.user(.admin, in: acme.tenant)
                let otherDevice = other.device.id.uuidString.lowercased()
                let ownDevice = acme.device.id.uuidString.lowercased()
                let socket = try await ws.open("/ws", bearer: admin.accessToken)

                var messages: [String: String] = [:]
                for room in ["tenant:other", "tenant:nope", "device:\(otherDevice)", "device:\(UUID().uuidString.lowercased())",
                             "device:\(ownDevice.uppercased())", "device:not-a-uuid", "planet:earth", "tenant", "user:\(admin.id.uuidString.lowercased())"] {
                    try await socket.join(room)
                    let error = try await socket.next("the refusal of \(room)")
                    #expect(error.type == "error" && error.code == "room_error" && error.room == room, "\(room): \(error)")
                    messages[room] = error.object["message"] as? String
                }
                #expect(messages["tenant:other"] == messages["tenant:nope"], "another tenant's room reads like a missing one")
                #expect(messages["device:\(otherDevice)"] == messages["tenant:nope"])

                try await socket.joinRoom("tenant:acme")
                try await live.postPositions(Fixes.object(1), apiKey: other.apiKey, expecting: 1)
                try await live.postPositions(Fixes.object(2), apiKey: acme.apiKey, expecting: 1)
                let update = try await socket.next("acme's update")
                #expect(update.fixIndex == 2 && update.room == "tenant:acme" && update.deviceID == ownDevice, "\(update)")
                try await socket.expectQuiet("other's fix never reaches acme's socket")
            }
        }
    }

    @Test("the same booking id in two tenants: a booking room gets only its own tenant's events")
    func bookingRoomPerTenant() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let acme = try await TestTenant.create(live.repository, id: "acme")
                let other = try await TestTenant.create(live.repository, id: "other")
                let admin = try await live.user(.admin, in: acme.tenant)
                #expect(try await TripAPI.accept(live, "bk-1", apiKey: acme.apiKey).status == 201)
                let socket = try await ws.open("/ws", bearer: admin.accessToken)
                try await socket.joinRoom("booking:bk-1")
                #expect(try await TripAPI.accept(live, "bk-1", apiKey: other.apiKey).status == 201)
                try await live.postPositions(Fixes.object(7), apiKey: other.apiKey, expecting: 1)
                try await live.postPositions(Fixes.object(8), apiKey: acme.apiKey, expecting: 1)
                let pushed = try await socket.collect(2)
                #expect(pushed.map(\.type) == ["location_update", "status"], "\(pushed)")
                #expect(pushed.first?.fixIndex == 8)
                check(pushed.allSatisfy { $0.deviceID == acme.device.id.uuidString.lowercased() }, "\(pushed)")
                try await socket.expectQuiet("the other tenant's bk-1 stays out")
            }
        }
    }

    @Test("a scoped dispatcher: tenant room shows only devices in scope; a device room of an invisible device is refused; so is its trip")
    func scopedDispatcher() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let fleet = try await ScopedFleet.create(live)  // fixes 1, 2, 3 for van1, van5, truck2
                let dispatcher = try await live.user(.dispatcher, in: fleet.tenant, scope: .upTo(["trucks": 1_000]))
                #expect(try await TripAPI.accept(live, "bk-van", apiKey: fleet.van1.apiKey).status == 201)
                #expect(try await TripAPI.accept(live, "bk-truck", apiKey: fleet.truck2.apiKey).status == 201)

                let socket = try await ws.open("/ws", bearer: dispatcher.accessToken)
                let snapshot = try await socket.joinRoom("tenant:acme")
                #expect(snapshot.snapshotDevices == [fleet.truck2.id], "\(snapshot)")

                try await socket.join("device:\(fleet.van1.id)")
                let refused = try await socket.next("the refusal of van1's room")
                #expect(refused.type == "error" && refused.code == "room_error" && refused.room == "device:\(fleet.van1.id)", "\(refused)")
                let deviceSnapshot = try await socket.joinRoom("device:\(fleet.truck2.id)")
                #expect(deviceSnapshot.snapshotDevices == [fleet.truck2.id])

                try await fleet.postRound(live, from: 10)  // van1 10, van5 11, truck2 12
                let pushed = try await socket.collect(4)
                let updates = pushed.filter { $0.type == "location_update" }
                #expect(updates.count == 2, "truck2's fix once per room: \(pushed)")
                #expect(Set(updates.compactMap(\.room)) == ["tenant:acme", "device:\(fleet.truck2.id)"])
                check(updates.allSatisfy { $0.deviceID == fleet.truck2.id && $0.fixIndex == 12 }, "\(updates)")
                let statuses = pushed.filter { $0.type == "status" }
                check(statuses.count == 2 && statuses.allSatisfy { $0.deviceID == fleet.truck2.id && $0.bookingID == "bk-truck" },
                        "only bk-truck's start: \(pushed)")
                try await socket.expectQuiet("van1's and van5's fixes and bk-van's start stay out")

                // A booking room of an invisible device's trip shows nothing of it.
                try await socket.joinRoom("booking:bk-van")
                try await live.postPositions(Fixes.object(20), apiKey: fleet.van1.apiKey, expecting: 1)
                #expect(try await TripAPI.cancel(live, "bk-van", apiKey: fleet.van1.apiKey).status == 200)
                try await live.postPositions(Fixes.object(21), apiKey: fleet.truck2.apiKey, expecting: 1)
                let next = try await socket.collect(2)
                check(next.allSatisfy { $0.fixIndex == 21 }, "\(next)")
                try await socket.expectQuiet("nothing of bk-van")

                // A trip outside the scope is refused like a missing one.
                try await ws.refusal("/ws/tracking/bk-van?access_token=\(dispatcher.accessToken)")
                    .expect(status: 404, code: "not_found", "a trip outside the scope")
                let trip = try await ws.open("/ws/tracking/bk-truck", bearer: dispatcher.accessToken)
                _ = try await trip.expect("joined", room: "booking:bk-truck")
            }
        }
    }

    @Test("a scope change on an open socket: remove and add, tagged with the room, then only in-scope events")
    func scopeChangeOnSocket() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let fleet = try await ScopedFleet.create(live)
                let admin = try await live.user(.admin, in: fleet.tenant)
                let viewer = try await live.user(.viewer, in: fleet.tenant, scope: .upTo(["vans": 3]))
                let socket = try await ws.open("/ws", bearer: viewer.accessToken)
                #expect(try await socket.joinRoom("tenant:acme").snapshotDevices == [fleet.van1.id])

                let changed = try await live.put("/api/v1/users/\(viewer.id.uuidString)/scope", bearer: admin.accessToken,
                                                 json: #"{"groups":{"trucks":{"grades":[2,7]}}}"#)
                #expect(changed.status == 200)
                let diff = try await socket.collect(2)
                #expect(Set(diff.compactMap(\.type)) == ["remove", "add"], "\(diff)")
                check(diff.allSatisfy { $0.room == "tenant:acme" }, "\(diff)")
                check(diff.first { $0.type == "remove" }?.deviceID == fleet.van1.id)
                check(diff.first { $0.type == "add" }?.deviceID == fleet.truck2.id)

                try await fleet.postRound(live, from: 20)
                let next = try await socket.next("truck2's fix")
                #expect(next.deviceID == fleet.truck2.id && next.fixIndex == 22, "\(next)")
                try await socket.expectQuiet("van fixes are out of scope now")
            }
        }
    }

    @Test("a user deleted while connected gets closed/user_deleted and the socket is closed (policy violation)")
    func deletedUser() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let setup = try await TestTenant.create(live.repository)
                let admin = try await live.user(.admin, in: setup.tenant)
                let viewer = try await live.user(.viewer, in: setup.tenant)
                let socket = try await ws.open("/ws", bearer: viewer.accessToken)
                try await socket.joinRoom("tenant:acme")
                #expect(try await live.delete("/api/v1/users/\(viewer.id.uuidString)", bearer: admin.accessToken).status == 200)
                let closed = try await socket.closed()
                #expect(closed.code == .policyViolation, "\(closed.end)")
                let messages = socket.inbox.untaken
                #expect(messages.last?.type == "closed" && messages.last?.object["reason"] as? String == "user_deleted", "\(messages)")
            }
        }
    }
}
