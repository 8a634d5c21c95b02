import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The trip lifecycle over REST (`POST /api/v1/bookings/{id}/accept | complete | cancel`) and
/// plain SQL: idempotent repeats, 409 with `current_status`, positions attached by the trigger,
/// and `status` events on the booking stream.
@Suite("trips: lifecycle", .serialized, .timeLimit(.minutes(3)))
struct TripLifecycleTests {
    static func point(_ k: Int, base: Date) -> TrackPoint {
        TrackPoint(time: base.addingTimeInterval(Double(k)), latitude: 52.52 + Double(k) * 0.0002, longitude: 13.405 + Double(k) * 0.0001,
                   speed: 8, heading: 20)
    }

    @Test("REST: accept (201, then 200) → positions attach and start it → complete; status and location events on the booking stream")
    func restLifecycle() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let device = setup.device.id.uuidString.lowercased()
            let base = TripClock.base()
            let stream = try await live.stream("/api/v1/bookings/order-1/stream", bearer: admin.accessToken)
            _ = try await stream.opening()
            let tenantStream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await tenantStream.opening()

            let accepted = try await TripAPI.accept(live, "order-1", apiKey: setup.apiKey)
            #expect(accepted.status == 201, "\(accepted.body)")
            let trip = try accepted.object()
            #expect(trip["booking_id"] as? String == "order-1")
            #expect(trip["device_id"] as? String == device)
            #expect(trip["status"] as? String == "accepted")
            #expect(trip["point_count"] as? Int == 0)
            #expect(trip["distance_metres"] as? Double == 0)
            #expect(trip["started_at"] == nil)
            let acceptedAt = try #require(trip["accepted_at"] as? String)

            let again = try await TripAPI.accept(live, "order-1", apiKey: setup.apiKey)
            #expect(again.status == 200, "a repeated accept is idempotent: \(again.body)")
            #expect(try again.object()["status"] as? String == "accepted")
            #expect(try again.object()["accepted_at"] as? String == acceptedAt)

            let acceptedEvent = try await stream.next("the accepted status event")
            #expect(acceptedEvent.event == "status")
            #expect(acceptedEvent.seq == 1)
            let acceptedData = try acceptedEvent.object()
            #expect(acceptedData["seq"] as? Int == 1)
            #expect(acceptedData["type"] as? String == "status")
            #expect(acceptedData["status"] as? String == "accepted")
            #expect(acceptedData["booking_id"] as? String == "order-1")
            #expect(acceptedData["device_id"] as? String == device)
            #expect(acceptedData["previous_status"] is NSNull)

            // The device posts without booking_id: the trigger attaches the running trip.
            try await live.postPositions(Self.point(0, base: base).json(), apiKey: setup.apiKey, expecting: 1)
            let firstUpdate = try await stream.next("the first position of the trip")
            #expect(firstUpdate.event == "location_update")
            #expect(firstUpdate.seq == 2)
            #expect(try firstUpdate.object()["booking_id"] as? String == "order-1")
            let started = try await stream.next("the in_progress status event")
            #expect(started.event == "status")
            #expect(started.seq == 3)
            let startedData = try started.object()
            #expect(startedData["status"] as? String == "in_progress")
            #expect(startedData["previous_status"] as? String == "accepted")
            #expect(startedData["point_count"] as? Int == 1, "the event shows the trip after its first point")
            #expect(startedData["started_at"] is String)

            try await live.postPositions(TrackPoint.array((1..<3).map { Self.point($0, base: base) }), apiKey: setup.apiKey, expecting: 2)
            let updates = try await stream.collect(2)
            #expect(updates.map(\.event) == ["location_update", "location_update"])
            #expect(updates.map(\.seq) == [4, 5])
            check(try updates.map { try $0.object()["booking_id"] as? String } == ["order-1", "order-1"])

            let running = try await TripAPI.trip(live, "order-1", bearer: admin.accessToken)
            #expect(running["status"] as? String == "in_progress")
            #expect(running["point_count"] as? Int == 3)

            let completed = try await TripAPI.complete(live, "order-1", apiKey: setup.apiKey)
            #expect(completed.status == 200, "\(completed.body)")
            let completedTrip = try completed.object()
            #expect(completedTrip["status"] as? String == "completed")
            let completedAt = try #require(completedTrip["completed_at"] as? String)
            let completedEvent = try await stream.next("the completed status event")
            #expect(completedEvent.event == "status")
            #expect(completedEvent.seq == 6)
            #expect(try completedEvent.object()["status"] as? String == "completed")
            #expect(try completedEvent.object()["previous_status"] as? String == "in_progress")

            let repeated = try await TripAPI.complete(live, "order-1", bearer: admin.accessToken)
            #expect(repeated.status == 200, "a repeated complete answers 200 unchanged: \(repeated.body)")
            #expect(try repeated.object()["completed_at"] as? String == completedAt)
            TripAPI.expectConflict(try await TripAPI.cancel(live, "order-1", bearer: admin.accessToken), currentStatus: "completed",
                                   "cancel after complete")
            TripAPI.expectConflict(try await TripAPI.accept(live, "order-1", apiKey: setup.apiKey), currentStatus: "completed",
                                   "accept of an ended booking")

            // After the trip: a position without booking_id stays without one (seq 7, not on this
            // booking's stream); one naming the booking explicitly still reaches it (seq 8).
            try await live.postPositions(Self.point(3, base: base).json(), apiKey: setup.apiKey, expecting: 1)
            try await live.postPositions(Self.point(4, base: base).json(booking: "order-1"), apiKey: setup.apiKey, expecting: 1)
            let explicit = try await stream.next("the explicitly booked position")
            #expect(explicit.event == "location_update")
            #expect(explicit.seq == 8, "no status event after the repeats and refusals, and no unattached position")

            // The tenant stream carries the same status events between the device's fixes.
            let tenantEvents = try await tenantStream.collect(8)
            #expect(tenantEvents.map(\.event) == ["status", "location_update", "status", "location_update", "location_update", "status",
                                                   "location_update", "location_update"])
            check(tenantEvents.map(\.seq) == (1...8).map { Int64($0) })
            check(try tenantEvents.filter { $0.event == "status" }.map { try $0.object()["status"] as? String }
                    == ["accepted", "in_progress", "completed"])

            let stored = try await TripSQL.bookings(live, device: setup.device.id)
            #expect(stored.map(\.booking) == ["order-1", "order-1", "order-1", nil, "order-1"])
            #expect(try await TripSQL.statusEvents(live, booking: "order-1") == ["accepted", "in_progress", "completed"])
        }
    }

    @Test("complete needs in_progress (409 current_status accepted); cancel from accepted or in_progress; repeats are 200; ended trips refuse")
    func invalidTransitions() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let key = staff.acme.apiKey
            let admin = staff.admin.accessToken
            let base = TripClock.base()

            #expect(try await TripAPI.accept(live, "b-1", apiKey: key).status == 201)
            TripAPI.expectConflict(try await TripAPI.complete(live, "b-1", bearer: admin), currentStatus: "accepted",
                                   "complete of an accepted trip")
            let cancelled = try await TripAPI.cancel(live, "b-1", bearer: admin)
            #expect(cancelled.status == 200, "\(cancelled.body)")
            #expect(try cancelled.object()["status"] as? String == "cancelled")
            let cancelledAt = try #require(try cancelled.object()["cancelled_at"] as? String)
            let again = try await TripAPI.cancel(live, "b-1", apiKey: key)
            #expect(again.status == 200)
            #expect(try again.object()["cancelled_at"] as? String == cancelledAt)
            TripAPI.expectConflict(try await TripAPI.complete(live, "b-1", bearer: admin), currentStatus: "cancelled",
                                   "complete after cancel")
            TripAPI.expectConflict(try await TripAPI.accept(live, "b-1", apiKey: key), currentStatus: "cancelled",
                                   "accept of a cancelled booking")
            #expect(try await TripSQL.statusEvents(live, booking: "b-1") == ["accepted", "cancelled"])

            // A position after the cancel attaches to nothing.
            try await live.postPositions(Self.point(0, base: base).json(), apiKey: key, expecting: 1)
            #expect(try await TripSQL.bookings(live, device: staff.acme.device.id).map(\.booking) == [nil])
            #expect(try await TripAPI.trip(live, "b-1", bearer: admin)["point_count"] as? Int == 0)

            // Cancel from in_progress.
            #expect(try await TripAPI.accept(live, "b-2", apiKey: key).status == 201)
            try await live.postPositions(Self.point(1, base: base).json(), apiKey: key, expecting: 1)
            #expect(try await TripAPI.trip(live, "b-2", bearer: admin)["status"] as? String == "in_progress")
            let cancelledRunning = try await TripAPI.cancel(live, "b-2", bearer: admin)
            #expect(cancelledRunning.status == 200)
            #expect(try cancelledRunning.object()["status"] as? String == "cancelled")
            #expect(try cancelledRunning.object()["point_count"] as? Int == 1)
            #expect(try await TripSQL.statusEvents(live, booking: "b-2") == ["accepted", "in_progress", "cancelled"])

            // Bookings never accepted.
            ValidationTests.expectError(try await TripAPI.complete(live, "never", bearer: admin), status: 404, code: "not_found",
                                        "complete of an unknown booking")
            ValidationTests.expectError(try await TripAPI.cancel(live, "never", apiKey: key), status: 404, code: "not_found",
                                        "cancel of an unknown booking")
            ValidationTests.expectError(try await live.get("/api/v1/tracking/never", bearer: admin), status: 404, code: "not_found",
                                        "read of an unknown booking")
        }
    }

    @Test("one running trip per device, one device per booking: 409 for a busy device and for another device's booking")
    func conflicts() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let (other, otherKey) = try await live.repository.createDevice(tenant: setup.tenant, name: "van-2", group: "default", grade: 0)
            let base = TripClock.base()

            #expect(try await TripAPI.accept(live, "x", apiKey: setup.apiKey).status == 201)
            TripAPI.expectConflict(try await TripAPI.accept(live, "x", apiKey: otherKey), currentStatus: "accepted",
                                   "another device accepting a booking that is accepted")
            let busy = try await TripAPI.accept(live, "y", apiKey: setup.apiKey)
            ValidationTests.expectError(busy, status: 409, code: "conflict", "a device that runs a trip accepting another")
            #expect(((try? busy.error())?["message"] as? String)?.contains("booking x ") == true, "the message names the running booking: \(busy.body)")

            try await live.postPositions(Self.point(0, base: base).json(), apiKey: setup.apiKey, expecting: 1)
            TripAPI.expectConflict(try await TripAPI.accept(live, "x", apiKey: otherKey), currentStatus: "in_progress",
                                   "another device accepting a booking in progress")
            // The other device's positions never attach to x.
            try await live.postPositions(Self.point(1, base: base).json(), apiKey: otherKey, expecting: 1)
            #expect(try await TripSQL.bookings(live, device: other.id).map(\.booking) == [nil])

            #expect(try await TripAPI.cancel(live, "x", apiKey: setup.apiKey).status == 200)
            #expect(try await TripAPI.accept(live, "y", apiKey: setup.apiKey).status == 201, "free again after the cancel")
            #expect(try await TripAPI.accept(live, "x2", apiKey: otherKey).status == 201, "the other device was never busy")
            try await live.postPositions(Self.point(2, base: base).json(), apiKey: otherKey, expecting: 1)
            #expect(try await TripSQL.bookings(live, device: other.id).map(\.booking) == [nil, "x2"])
        }
    }

    @Test("who accepts for which device: device key and driver for their own; admin and dispatcher name device_id; viewer 403")
    func actingDevice() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let (second, secondKey) = try await live.repository.createDevice(tenant: staff.acme.tenant, name: "van-2", group: "default", grade: 0)
            let (third, _) = try await live.repository.createDevice(tenant: staff.acme.tenant, name: "van-3", group: "default", grade: 0)
            let own = staff.acme.device.id.uuidString.lowercased()
            let secondID = second.id.uuidString.lowercased()
            let thirdID = third.id.uuidString.lowercased()

            ValidationTests.expectError(try await TripAPI.accept(live, "a-1", bearer: staff.admin.accessToken), status: 422,
                                        code: "validation_failed", field: "device_id", "an admin must name the device")
            ValidationTests.expectError(try await TripAPI.accept(live, "a-1", bearer: staff.admin.accessToken,
                                                                 device: UUID().uuidString.lowercased()),
                                        status: 404, code: "not_found", "an admin naming an unknown device")
            ValidationTests.expectError(try await TripAPI.accept(live, "a-1", bearer: staff.viewer.accessToken, device: secondID),
                                        status: 403, code: "forbidden", "a viewer accepting")
            ValidationTests.expectError(try await TripAPI.accept(live, "a-1", bearer: staff.idleDriver.accessToken),
                                        status: 403, code: "forbidden", "a driver with no device")
            ValidationTests.expectError(try await TripAPI.accept(live, "a-1", bearer: staff.driver.accessToken, device: secondID),
                                        status: 403, code: "forbidden", "a driver naming another device")
            ValidationTests.expectError(try await TripAPI.accept(live, "a-1", apiKey: secondKey, device: own),
                                        status: 403, code: "forbidden", "a device key naming another device")
            #expect(try await TripSQL.statusEvents(live, booking: "a-1").isEmpty, "nothing was accepted")

            let byDriver = try await TripAPI.accept(live, "a-1", bearer: staff.driver.accessToken)
            #expect(byDriver.status == 201, "\(byDriver.body)")
            #expect(try byDriver.object()["device_id"] as? String == own)
            let byAdmin = try await TripAPI.accept(live, "a-2", bearer: staff.admin.accessToken, device: secondID)
            #expect(byAdmin.status == 201, "\(byAdmin.body)")
            #expect(try byAdmin.object()["device_id"] as? String == secondID)
            let byDispatcher = try await TripAPI.accept(live, "a-3", bearer: staff.dispatcher.accessToken, device: thirdID)
            #expect(byDispatcher.status == 201, "\(byDispatcher.body)")
            #expect(try byDispatcher.object()["device_id"] as? String == thirdID)
            // The same key naming its own device is fine (and idempotent).
            #expect(try await TripAPI.accept(live, "a-2", apiKey: secondKey, device: secondID).status == 200)

            // The driver manages the trip of their device, not another's.
            ValidationTests.expectError(try await TripAPI.cancel(live, "a-2", bearer: staff.driver.accessToken), status: 404,
                                        code: "not_found", "a driver cancelling another device's trip")
            #expect(try await TripAPI.cancel(live, "a-1", bearer: staff.driver.accessToken).status == 200)
            #expect(try await TripAPI.cancel(live, "a-3", bearer: staff.dispatcher.accessToken).status == 200)
        }
    }

    @Test("concurrent accepts: of one booking by six devices, and of six bookings by one device, exactly one wins")
    func races() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            var keys = [setup.apiKey]
            for n in 2...6 {
                keys.append(try await live.repository.createDevice(tenant: setup.tenant, name: "van-\(n)", group: "default", grade: 0).apiKey)
            }
            let indexed = try await withThrowingTaskGroup(of: (Int, LiveNode.Reply).self) { group in
                for (index, key) in keys.enumerated() { group.addTask { (index, try await TripAPI.accept(live, "race", apiKey: key)) } }
                return try await group.reduce(into: [(Int, LiveNode.Reply)]()) { $0.append($1) }
            }
            let sameBooking = indexed.sorted { $0.0 < $1.0 }.map(\.1)
            check(sameBooking.filter { $0.status == 201 }.count == 1, "\(sameBooking.map { "\($0.status) \($0.body)" })")
            check(sameBooking.filter { $0.status == 409 }.count == 5, "\(sameBooking.map { "\($0.status) \($0.body)" })")
            for reply in sameBooking where reply.status == 409 {
                #expect((try? reply.error())?["current_status"] as? String == "accepted", "\(reply.body)")
            }

            // The winner's device is busy; another device races for six bookings.
            let free = keys[sameBooking.firstIndex { $0.status == 201 } == 0 ? 1 : 0]
            let sameDevice = try await withThrowingTaskGroup(of: LiveNode.Reply.self) { group in
                for n in 0..<6 { group.addTask { try await TripAPI.accept(live, "solo-\(n)", apiKey: free) } }
                return try await group.reduce(into: [LiveNode.Reply]()) { $0.append($1) }
            }
            check(sameDevice.filter { $0.status == 201 }.count == 1, "\(sameDevice.map { "\($0.status) \($0.body)" })")
            check(sameDevice.filter { $0.status == 409 }.count == 5, "\(sameDevice.map { "\($0.status) \($0.body)" })")
            let trips = try await TripSQL.withConnection(live) { connection in
                try await Fixes.count("SELECT count(*)::int FROM trips", on: connection)
            }
            #expect(trips == 2)
            let statusEvents = try await TripSQL.withConnection(live) { connection in
                try await Fixes.count("SELECT count(*)::int FROM change_log WHERE kind = 'status'", on: connection)
            }
            #expect(statusEvents == 2, "one accepted event per trip created, none for the losers")
        }
    }

    @Test("plain SQL: pgtrack_trip_accept / INSERT / pgtrack_trip_finish give the same lifecycle and pushes as REST")
    func plainSQL() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let stream = try await live.stream("/api/v1/bookings/sql-1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            let outcomes = try await TripSQL.withConnection(live) { connection -> [String] in
                var outcomes: [String] = []
                func outcome(_ query: PostgresQuery) async throws {
                    for try await text in try await connection.query(query, logger: TestCluster.logger).decode(String.self) {
                        outcomes.append(text)
                    }
                }
                try await outcome("SELECT (pgtrack_trip_accept('acme', 'sql-1', \(setup.device.id))).outcome")
                try await outcome("SELECT (pgtrack_trip_accept('acme', 'sql-1', \(setup.device.id))).outcome")
                try await outcome("SELECT (pgtrack_trip_finish('acme', 'sql-1', 'completed')).outcome")
                try await Fixes.insertSQL(1, tenant: setup.tenant, device: setup.device.id, on: connection)
                try await Fixes.insertSQL(2, tenant: setup.tenant, device: setup.device.id, on: connection)
                try await outcome("SELECT (pgtrack_trip_finish('acme', 'sql-1', 'completed')).outcome")
                return outcomes
            }
            #expect(outcomes == ["created", "unchanged", "conflict", "changed"])
            let events = try await stream.collect(5)
            #expect(events.map(\.event) == ["status", "location_update", "status", "location_update", "status"])
            #expect(events.map(\.seq) == [1, 2, 3, 4, 5])
            check(try events.map { try $0.object()["status"] as? String } == ["accepted", nil, "in_progress", nil, "completed"])
            check(try events.map { try $0.object()["booking_id"] as? String } == Array(repeating: "sql-1", count: 5))
            let trip = try await TripAPI.trip(live, "sql-1", apiKey: setup.apiKey)
            #expect(trip["status"] as? String == "completed")
            #expect(trip["point_count"] as? Int == 2)
        }
    }
}
