import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Who may read and change which trip: another tenant's booking and a booking outside the
/// caller's scope answer 404 like a missing one; viewers read but never change; a device manages
/// only its own trips.
@Suite("trips: authorization", .serialized, .timeLimit(.minutes(3)))
struct TripAccessTests {
    /// Every read and write of a booking, as (name, request).
    static func probes(_ booking: String) -> [(String, @Sendable (LiveNode, String?, String?) async throws -> LiveNode.Reply)] {
        [
            ("GET tracking", { live, key, bearer in try await live.get("/api/v1/tracking/\(booking)", apiKey: key, bearer: bearer) }),
            ("GET route", { live, key, bearer in try await live.get("/api/v1/tracking/\(booking)/route?points=true", apiKey: key, bearer: bearer) }),
            ("GET route gpx", { live, key, bearer in try await live.get("/api/v1/tracking/\(booking)/route?format=gpx", apiKey: key, bearer: bearer) }),
            ("GET route csv", { live, key, bearer in try await live.get("/api/v1/tracking/\(booking)/route?format=csv", apiKey: key, bearer: bearer) }),
            ("GET points", { live, key, bearer in try await live.get("/api/v1/tracking/\(booking)/points?limit=5", apiKey: key, bearer: bearer) }),
            ("POST complete", { live, key, bearer in try await TripAPI.complete(live, booking, apiKey: key, bearer: bearer) }),
            ("POST cancel", { live, key, bearer in try await TripAPI.cancel(live, booking, apiKey: key, bearer: bearer) }),
            ("event delivery_confirmed", { live, key, bearer in
                try await TripAPI.events(live, #"{"event_type":"booking.delivery_confirmed","booking_id":"\#(booking)"}"#, apiKey: key, bearer: bearer)
            }),
            ("event cancelled", { live, key, bearer in
                try await TripAPI.events(live, #"{"event_type":"booking.cancelled","booking_id":"\#(booking)"}"#, apiKey: key, bearer: bearer)
            }),
        ]
    }

    /// Each probe of `booking` answers exactly as the same probe of a booking that does not exist.
    static func expectLikeMissing(_ live: LiveNode, _ booking: String, apiKey: String? = nil, bearer: String? = nil,
                                  secrets: [String], _ who: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let missing = "nothing-here"
        for ((name, probe), (_, control)) in zip(probes(booking), probes(missing)) {
            let reply = try await probe(live, apiKey, bearer)
            let expected = try await control(live, apiKey, bearer)
            #expect(reply.status == 404, "\(who) \(name) \(booking): \(reply.status) \(reply.body)", sourceLocation: sourceLocation)
            #expect(reply.status == expected.status, "\(who) \(name): \(reply.status) vs \(expected.status) for a missing booking",
                    sourceLocation: sourceLocation)
            #expect(reply.body.replacingOccurrences(of: booking, with: "B") == expected.body.replacingOccurrences(of: missing, with: "B"),
                    "\(who) \(name): \(reply.body) vs \(expected.body)", sourceLocation: sourceLocation)
            for secret in secrets {
                #expect(!reply.body.contains(secret), "\(who) \(name) reveals \(secret): \(reply.body)", sourceLocation: sourceLocation)
            }
        }
    }

    static func point(_ k: Int, base: Date, booking: String? = nil) -> String {
        TrackPoint(time: base.addingTimeInterval(Double(k)), latitude: 52.4 + Double(k) * 0.0001, longitude: 13.3, speed: 5, heading: nil)
            .json(booking: booking)
    }

    @Test("another tenant's booking: 404 like a missing one on every read and write; accepting the same id makes an independent trip")
    func otherTenant() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let globex = try await TestTenant.create(live.repository, id: "globex", deviceName: "globex-van")
            let globexDevice = globex.device.id.uuidString.lowercased()
            let base = TripClock.base()
            #expect(try await TripAPI.accept(live, "g-1", apiKey: globex.apiKey).status == 201)
            try await live.postPositions(Self.point(0, base: base), apiKey: globex.apiKey, expecting: 1)
            let globexStream = try await live.stream("/api/v1/bookings/g-1/stream", apiKey: globex.apiKey)
            _ = try await globexStream.opening()

            for (who, key, bearer) in [("acme admin", nil, staff.admin.accessToken), ("acme dispatcher", nil, staff.dispatcher.accessToken),
                                       ("acme driver", nil, staff.driver.accessToken), ("acme device", staff.acme.apiKey, nil)] {
                try await Self.expectLikeMissing(live, "g-1", apiKey: key, bearer: bearer, secrets: [globexDevice, "in_progress"], who)
            }
            let globexTrip = try await TripAPI.trip(live, "g-1", apiKey: globex.apiKey)
            #expect(globexTrip["status"] as? String == "in_progress", "globex's trip is unchanged: \(globexTrip)")
            #expect(globexTrip["point_count"] as? Int == 1)

            // acme accepting the same booking id makes acme's own trip; globex's is untouched.
            let acmeStream = try await live.stream("/api/v1/bookings/g-1/stream", bearer: staff.admin.accessToken)
            _ = try await acmeStream.opening()
            let accepted = try await TripAPI.accept(live, "g-1", apiKey: staff.acme.apiKey)
            #expect(accepted.status == 201, "\(accepted.body)")
            #expect(try accepted.object()["device_id"] as? String == staff.acme.device.id.uuidString.lowercased())
            try await live.postPositions(Self.point(1, base: base), apiKey: staff.acme.apiKey, expecting: 1)
            try await live.postPositions(Self.point(2, base: base), apiKey: globex.apiKey, expecting: 1)
            let acmeEvents = try await acmeStream.collect(3)
            #expect(acmeEvents.map(\.event) == ["status", "location_update", "status"])
            check(acmeEvents.allSatisfy { $0.deviceID == staff.acme.device.id.uuidString.lowercased() }, "only acme's events")
            let globexEvent = try await globexStream.next("globex's own next fix")
            #expect(globexEvent.event == "location_update", "acme's status events never reach globex: \(globexEvent.data)")
            #expect(globexEvent.deviceID == globexDevice)

            let acmeTrip = try await TripAPI.trip(live, "g-1", apiKey: staff.acme.apiKey)
            #expect(acmeTrip["point_count"] as? Int == 1)
            let globexAfter = try await TripAPI.trip(live, "g-1", apiKey: globex.apiKey)
            #expect(globexAfter["device_id"] as? String == globexDevice)
            #expect(globexAfter["point_count"] as? Int == 2)
            let acmeRoute = try await live.get("/api/v1/tracking/g-1/points", apiKey: staff.acme.apiKey).object()
            #expect((acmeRoute["points"] as? [Any])?.count == 1, "acme's route holds acme's fix only: \(acmeRoute)")
            // acme completing its g-1 leaves globex's running.
            #expect(try await TripAPI.complete(live, "g-1", bearer: staff.admin.accessToken).status == 200)
            #expect(try await TripAPI.trip(live, "g-1", apiKey: globex.apiKey)["status"] as? String == "in_progress")
        }
    }

    @Test("a dispatcher whose scope excludes the trip's device: 404 like a missing booking everywhere, no status events on its stream")
    func outOfScope() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let vansOnly = try await live.user(.dispatcher, in: fleet.tenant, scope: .upTo(["vans": 9]))
            let base = TripClock.base()
            #expect(try await TripAPI.accept(live, "t-1", apiKey: fleet.truck2.apiKey).status == 201)
            try await live.postPositions(Self.point(0, base: base), apiKey: fleet.truck2.apiKey, expecting: 1)
            #expect(try await TripAPI.accept(live, "v-1", apiKey: fleet.van1.apiKey).status == 201)

            try await Self.expectLikeMissing(live, "t-1", bearer: vansOnly.accessToken, secrets: [fleet.truck2.id], "vans-only dispatcher")
            ValidationTests.expectError(try await TripAPI.accept(live, "t-2", bearer: vansOnly.accessToken, device: fleet.truck2.id),
                                        status: 404, code: "not_found", "accept for an out-of-scope device")
            #expect(try await live.get("/api/v1/tracking/v-1", bearer: vansOnly.accessToken).status == 200, "in scope: readable")
            #expect(try await TripAPI.trip(live, "t-1", bearer: admin.accessToken)["status"] as? String == "in_progress", "t-1 unchanged")

            // On the booking stream, the out-of-scope trip's status events never arrive.
            let stream = try await live.stream("/api/v1/bookings/t-1/stream", bearer: vansOnly.accessToken)
            _ = try await stream.opening()
            #expect(try await TripAPI.cancel(live, "t-1", bearer: admin.accessToken).status == 200)
            try await live.postPositions(Self.point(1, base: base, booking: "t-1"), apiKey: fleet.van5.apiKey, expecting: 1)
            let first = try await stream.next("van5's fix on booking t-1")
            #expect(first.event == "location_update", "the cancel of truck2's trip is out of scope: \(first.data)")
            #expect(first.deviceID == fleet.van5.id)
        }
    }

    @Test("viewers read trips (200) but cannot accept, complete or cancel (403)")
    func viewerReadsOnly() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let viewer = staff.viewer.accessToken
            let base = TripClock.base()
            #expect(try await TripAPI.accept(live, "v-1", apiKey: staff.acme.apiKey).status == 201)
            try await live.postPositions(Self.point(0, base: base), apiKey: staff.acme.apiKey, expecting: 1)
            let device = staff.acme.device.id.uuidString.lowercased()

            for path in ["/api/v1/tracking/v-1", "/api/v1/tracking/v-1/route", "/api/v1/tracking/v-1/route?format=gpx",
                         "/api/v1/tracking/v-1/route?format=csv", "/api/v1/tracking/v-1/points"] {
                let reply = try await live.get(path, bearer: viewer)
                #expect(reply.status == 200, "viewer GET \(path): \(reply.status) \(reply.body.prefix(200))")
            }
            ValidationTests.expectError(try await TripAPI.accept(live, "v-2", bearer: viewer, device: device), status: 403,
                                        code: "forbidden", "viewer accept")
            ValidationTests.expectError(try await TripAPI.complete(live, "v-1", bearer: viewer), status: 403, code: "forbidden",
                                        "viewer complete")
            ValidationTests.expectError(try await TripAPI.cancel(live, "v-1", bearer: viewer), status: 403, code: "forbidden",
                                        "viewer cancel")
            ValidationTests.expectError(try await TripAPI.events(live, #"{"event_type":"booking.delivery_confirmed","booking_id":"v-1"}"#,
                                                                 bearer: viewer), status: 403, code: "forbidden", "viewer delivery event")
            #expect(try await TripAPI.trip(live, "v-1", bearer: viewer)["status"] as? String == "in_progress", "unchanged")
            #expect(try await TripSQL.statusEvents(live, booking: "v-1") == ["accepted", "in_progress"])
            #expect(try await TripSQL.logged(live, kind: "status", booking: "v-2") == 0)
        }
    }

    @Test("a device cannot complete or cancel another device's trip (403 in its group, 404 outside it); drivers see only theirs")
    func devicesManageTheirOwn() async throws {
        try await LiveNode.run { live in
            let fleet = try await ScopedFleet.create(live)
            let van1Driver = try await live.user(.driver, in: fleet.tenant, device: fleet.van1.device.id)
            let base = TripClock.base()
            #expect(try await TripAPI.accept(live, "v5-1", apiKey: fleet.van5.apiKey).status == 201)
            try await live.postPositions(Self.point(0, base: base), apiKey: fleet.van5.apiKey, expecting: 1)

            // van1 shares van5's group: it sees the trip but may not change it.
            #expect(try await live.get("/api/v1/tracking/v5-1", apiKey: fleet.van1.apiKey).status == 200)
            ValidationTests.expectError(try await TripAPI.complete(live, "v5-1", apiKey: fleet.van1.apiKey), status: 403,
                                        code: "forbidden", "van1 completing van5's trip")
            ValidationTests.expectError(try await TripAPI.cancel(live, "v5-1", apiKey: fleet.van1.apiKey), status: 403,
                                        code: "forbidden", "van1 cancelling van5's trip")
            ValidationTests.expectError(try await TripAPI.events(live, #"{"event_type":"booking.delivery_confirmed","booking_id":"v5-1"}"#,
                                                                 apiKey: fleet.van1.apiKey),
                                        status: 403, code: "forbidden", "van1's delivery event for van5's trip")
            // truck2 is in another group: the trip does not exist for it.
            try await Self.expectLikeMissing(live, "v5-1", apiKey: fleet.truck2.apiKey, secrets: [fleet.van5.id], "truck2's key")
            // van1's driver sees only van1.
            try await Self.expectLikeMissing(live, "v5-1", bearer: van1Driver.accessToken, secrets: [fleet.van5.id], "van1's driver")
            #expect(try await TripAPI.trip(live, "v5-1", apiKey: fleet.van5.apiKey)["status"] as? String == "in_progress", "unchanged")

            let completed = try await TripAPI.complete(live, "v5-1", apiKey: fleet.van5.apiKey)
            #expect(completed.status == 200, "van5 completes its own trip: \(completed.body)")
        }
    }

    @Test("accepting a booking that runs on a device the caller may not see: 409 'taken', without the trip's status; a caller who sees it gets current_status")
    func acceptLostToUnseenDevice() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)  // van-1, group "default"
            let bike = try await live.repository.createDevice(tenant: setup.tenant, name: "bike-1", group: "bikes", grade: 0)
            let van = try await live.repository.createDevice(tenant: setup.tenant, name: "van-2", group: "default", grade: 0)
            #expect(try await TripAPI.accept(live, "b-1", apiKey: setup.apiKey).status == 201)
            for (name, reply) in [
                ("accept", try await TripAPI.accept(live, "b-1", apiKey: bike.apiKey)),
                ("event", try await TripAPI.events(live, #"{"event_type":"booking.accepted","booking_id":"b-1"}"#, apiKey: bike.apiKey)),
            ] {
                #expect(reply.status == 409, "\(name): \(reply.body)")
                let error = try reply.error()
                #expect(error["current_status"] == nil, "\(name): \(reply.body)")
                #expect(!reply.body.contains("accepted") && !reply.body.contains("trip of booking"), "\(name): \(reply.body)")
                #expect((error["message"] as? String)?.contains("taken") == true, "\(name): \(reply.body)")
            }
            let seen = try await TripAPI.accept(live, "b-1", apiKey: van.apiKey)
            #expect(seen.status == 409)
            #expect(try seen.error()["current_status"] as? String == "accepted", "\(seen.body)")
        }
    }

}
