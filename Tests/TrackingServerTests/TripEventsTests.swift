import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// `POST /api/v1/events`: the producer events of the Kafka design, one or an array, flat or
/// wrapped in `payload`/`data`, applied in one transaction.
@Suite("trips: producer events", .serialized, .timeLimit(.minutes(3)))
struct TripEventsTests {
    static func results(_ reply: LiveNode.Reply) throws -> [[String: Any]] {
        try reply.object()["results"] as? [[String: Any]] ?? []
    }

    static func outcomes(_ reply: LiveNode.Reply) throws -> [String?] {
        try results(reply).map { $0["outcome"] as? String }
    }

    static func location(_ k: Int, base: Date, runner: String? = nil, booking: String? = nil) -> String {
        var fields: [String: String?] = [
            "latitude": "\(52.52 + Double(k) * 0.0003)",
            "longitude": "\(13.405 + Double(k) * 0.0002)",
            "speed_kmh": "36",
            "heading_degrees": "90",
            "timestamp": "\"\(base.addingTimeInterval(Double(k)).iso8601)\"",
        ]
        if let runner { fields["runner_id"] = "\"\(runner)\"" }
        if let booking { fields["booking_id"] = "\"\(booking)\"" }
        return Fixes.object(fields)
    }

    static func positionCount(_ live: LiveNode) async throws -> Int {
        try await TripSQL.withConnection(live) { connection in
            try await Fixes.count("SELECT count(*)::int FROM positions", on: connection)
        }
    }

    static func lastSeq(_ live: LiveNode) async throws -> Int {
        try await TripSQL.withConnection(live) { connection in
            try await Fixes.count("SELECT coalesce(max(last_seq), 0)::int FROM change_log_heads", on: connection)
        }
    }

    @Test("single events, flat and wrapped (event_type / type+payload / event+data): accept, locations, delivery, repeats")
    func singleEvents() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let runner = setup.device.id.uuidString.lowercased()
            let base = TripClock.base()
            let stream = try await live.stream("/api/v1/bookings/bk-1/stream", bearer: admin.accessToken)
            _ = try await stream.opening()

            let accepted = try await TripAPI.events(live, #"{"event_type":"booking.accepted","booking_id":"bk-1","runner_id":"\#(runner)"}"#,
                                                    bearer: admin.accessToken)
            #expect(accepted.status == 200, "\(accepted.body)")
            #expect(try accepted.object()["applied"] as? Int == 1)
            #expect(try Self.outcomes(accepted) == ["created"])
            let trip = try #require(try Self.results(accepted).first?["trip"] as? [String: Any])
            #expect(trip["status"] as? String == "accepted")
            #expect(trip["device_id"] as? String == runner)

            // Wrapped in payload, named by `type`; speed in km/h, heading in degrees; no booking_id.
            let wrapped = try await TripAPI.events(live, #"{"type":"runner.location_update","payload":\#(Self.location(0, base: base, runner: runner))}"#,
                                                   bearer: admin.accessToken)
            #expect(wrapped.status == 200, "\(wrapped.body)")
            #expect(try Self.outcomes(wrapped) == ["recorded"])
            // Wrapped in data, named by `event`, sent by the device itself (no runner_id).
            let byDevice = try await TripAPI.events(live, #"{"event":"runner.location_update","data":\#(Self.location(1, base: base))}"#,
                                                    apiKey: setup.apiKey)
            #expect(byDevice.status == 200, "\(byDevice.body)")

            let events = try await stream.collect(4)
            #expect(events.map(\.event) == ["status", "location_update", "status", "location_update"])
            #expect(events.map(\.seq) == [1, 2, 3, 4])
            let update = try events[1].object()
            #expect(update["booking_id"] as? String == "bk-1")
            check((update["speed"] as? Double).map { abs($0 - 10) < 1e-9 } == true, "36 km/h is 10 m/s: \(update)")
            #expect(update["heading"] as? Double == 90)
            #expect(try events[2].object()["status"] as? String == "in_progress")

            let running = try await TripAPI.trip(live, "bk-1", bearer: admin.accessToken)
            #expect(running["status"] as? String == "in_progress")
            #expect(running["point_count"] as? Int == 2)
            #expect(running["max_speed"] as? Double == 10)

            let delivered = try await TripAPI.events(live, #"{"event_type":"booking.delivery_confirmed","payload":{"booking_id":"bk-1"}}"#,
                                                     apiKey: setup.apiKey)
            #expect(delivered.status == 200, "\(delivered.body)")
            #expect(try Self.outcomes(delivered) == ["changed"])
            #expect((try Self.results(delivered).first?["trip"] as? [String: Any])?["status"] as? String == "completed")
            let repeated = try await TripAPI.events(live, #"{"event_type":"booking.delivery_confirmed","booking_id":"bk-1"}"#,
                                                    bearer: admin.accessToken)
            #expect(repeated.status == 200)
            #expect(try Self.outcomes(repeated) == ["unchanged"])
            let cancelled = try await TripAPI.events(live, #"{"event_type":"booking.cancelled","booking_id":"bk-1"}"#, bearer: admin.accessToken)
            TripAPI.expectConflict(cancelled, currentStatus: "completed", "booking.cancelled of a completed trip")
            let completedEvent = try await stream.next("the completed status event")
            #expect(completedEvent.seq == 5)
            #expect(try completedEvent.object()["status"] as? String == "completed")

            #expect(try await TripSQL.bookings(live, device: setup.device.id).map(\.booking) == ["bk-1", "bk-1"])
            #expect(try await TripSQL.statusEvents(live, booking: "bk-1") == ["accepted", "in_progress", "completed"])
        }
    }

    @Test("one array, one transaction: accepted → location updates → delivery_confirmed in one request, by the device")
    func wholeTripInOneBatch() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let base = TripClock.base()
            let batch = """
                [{"event_type":"booking.accepted","booking_id":"bk-2"},
                 {"event_type":"runner.location_update","payload":\(Self.location(0, base: base))},
                 {"type":"runner.location_update","data":\(Self.location(1, base: base))},
                 \(Self.location(2, base: base).dropLast()),"event":"runner.location_update"},
                 {"event_type":"booking.completed","data":{"booking_id":"bk-2"}}]
                """
            let reply = try await TripAPI.events(live, batch, apiKey: setup.apiKey)
            #expect(reply.status == 200, "\(reply.body)")
            #expect(try reply.object()["applied"] as? Int == 5)
            #expect(try Self.outcomes(reply) == ["created", "recorded", "recorded", "recorded", "changed"])
            let trip = try await TripAPI.trip(live, "bk-2", apiKey: setup.apiKey)
            #expect(trip["status"] as? String == "completed")
            #expect(trip["point_count"] as? Int == 3)
            #expect(trip["duration_seconds"] as? Double == 2)
            #expect(try await TripSQL.statusEvents(live, booking: "bk-2") == ["accepted", "in_progress", "completed"])
            #expect(try await TripSQL.bookings(live, device: setup.device.id).map(\.booking) == ["bk-2", "bk-2", "bk-2"])
        }
    }

    @Test("a failing event fails the batch: its index, and nothing of the batch applied (no trip, no position, no event)")
    func atomicBatches() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let runner = setup.device.id.uuidString.lowercased()
            let base = TripClock.base()
            let tenantStream = try await live.stream("/api/v1/stream", bearer: admin.accessToken)
            _ = try await tenantStream.opening()

            // Fails in the database at index 2: the device is busy with bk-3 accepted at index 0.
            let busy = try await TripAPI.events(live, """
                [{"event_type":"booking.accepted","booking_id":"bk-3","runner_id":"\(runner)"},
                 {"event_type":"runner.location_update","payload":\(Self.location(0, base: base, runner: runner))},
                 {"event_type":"booking.accepted","booking_id":"bk-4","runner_id":"\(runner)"}]
                """, bearer: admin.accessToken)
            ValidationTests.expectError(busy, status: 409, code: "conflict", index: 2, "a busy device at index 2")
            // Fails before the database: an unknown runner at index 1.
            let unknown = try await TripAPI.events(live, """
                [{"event_type":"booking.accepted","booking_id":"bk-3","runner_id":"\(runner)"},
                 {"event_type":"runner.location_update","payload":\(Self.location(0, base: base, runner: UUID().uuidString))}]
                """, bearer: admin.accessToken)
            ValidationTests.expectError(unknown, status: 404, code: "not_found", index: 1, "an unknown runner at index 1")
            // Fails in the database at index 3: complete of a trip accepted (no positions) at index 2.
            let early = try await TripAPI.events(live, """
                [{"event_type":"runner.location_update","payload":\(Self.location(0, base: base, runner: runner))},
                 {"event_type":"runner.location_update","payload":\(Self.location(1, base: base, runner: runner))},
                 {"event_type":"booking.accepted","booking_id":"bk-5","runner_id":"\(runner)"},
                 {"event_type":"booking.delivery_confirmed","booking_id":"bk-5"}]
                """, bearer: admin.accessToken)
            TripAPI.expectConflict(early, currentStatus: "accepted", index: 3, "delivery of a trip with no positions at index 3")

            #expect(try await Self.positionCount(live) == 0, "no position of a failed batch is stored")
            #expect(try await Self.lastSeq(live) == 0, "no event of a failed batch is logged")
            for booking in ["bk-3", "bk-4", "bk-5"] {
                ValidationTests.expectError(try await live.get("/api/v1/tracking/\(booking)", bearer: admin.accessToken),
                                            status: 404, code: "not_found", "\(booking) of a failed batch")
            }
            // Nothing of the failed batches was pushed: the next event is this one, seq 1.
            let ok = try await TripAPI.events(live, "[\(Self.location(9, base: base, runner: runner).dropLast()),\"event_type\":\"runner.location_update\"}]",
                                              bearer: admin.accessToken)
            #expect(ok.status == 200, "\(ok.body)")
            let first = try await tenantStream.next("the first event after the failed batches")
            #expect(first.event == "location_update")
            #expect(first.seq == 1)
        }
    }

    @Test("rejected bodies: bad JSON 400, unknown event_type 422 (with index in arrays), bad fields 422, unknown runner 404")
    func rejections() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let admin = staff.admin.accessToken
            let runner = staff.acme.device.id.uuidString.lowercased()
            let base = TripClock.base()
            func post(_ json: String, bearer: String? = admin) async throws -> LiveNode.Reply {
                try await TripAPI.events(live, json, bearer: bearer)
            }
            let good = #"{"event_type":"booking.accepted","booking_id":"bk-9","runner_id":"\#(runner)"}"#

            ValidationTests.expectError(try await post("{not json"), status: 400, code: "malformed_json", "not JSON")
            ValidationTests.expectError(try await post("42"), status: 400, code: "malformed_json", "a number")
            ValidationTests.expectError(try await post("[]"), status: 422, code: "validation_failed", "an empty array")

            let single = try await post(#"{"event_type":"booking.teleported","booking_id":"bk-9"}"#)
            ValidationTests.expectError(single, status: 422, code: "validation_failed", field: "event_type", "an unknown event")
            #expect((try? single.error())?["index"] == nil, "a single event has no index: \(single.body)")
            ValidationTests.expectError(try await post("[\(good),\(good),{\"event_type\":\"booking.teleported\",\"booking_id\":\"bk-9\"}]"),
                                        status: 422, code: "validation_failed", field: "event_type", index: 2, "an unknown event at index 2")
            ValidationTests.expectError(try await post(#"[\#(good),{"booking_id":"bk-9"}]"#), status: 422, code: "validation_failed",
                                        field: "event_type", index: 1, "no event name at index 1")
            ValidationTests.expectError(try await post(#"[\#(good),"booking.accepted"]"#), status: 422, code: "validation_failed",
                                        index: 1, "a string in the array")
            ValidationTests.expectError(try await post(#"{"event_type":"booking.accepted","runner_id":"\#(runner)"}"#), status: 422,
                                        code: "validation_failed", field: "booking_id", "accepted without booking_id")
            ValidationTests.expectError(try await post(#"{"event_type":"booking.accepted","booking_id":"no spaces","runner_id":"\#(runner)"}"#),
                                        status: 422, code: "validation_failed", field: "booking_id", "a bad booking_id")
            ValidationTests.expectError(try await post(#"{"event_type":"booking.accepted","booking_id":"bk-9","runner_id":"van-7"}"#),
                                        status: 422, code: "validation_failed", field: "runner_id", "a runner_id that is no UUID")
            ValidationTests.expectError(try await post(#"{"event_type":"booking.accepted","booking_id":"bk-9"}"#), status: 422,
                                        code: "validation_failed", field: "runner_id", "an admin without runner_id")
            let badLatitude = Self.location(0, base: base, runner: runner).replacingOccurrences(of: #""latitude":52.52"#, with: #""latitude":91"#)
            #expect(badLatitude.contains("91"))
            ValidationTests.expectError(try await post(#"[\#(good),{"event_type":"runner.location_update","payload":\#(badLatitude)}]"#),
                                        status: 422, code: "validation_failed", field: "latitude", index: 1, "latitude 91 at index 1")
            ValidationTests.expectError(try await post(#"{"event_type":"booking.accepted","booking_id":"bk-9","runner_id":"\#(UUID().uuidString)"}"#),
                                        status: 404, code: "not_found", "an unknown runner")
            ValidationTests.expectError(try await post(#"[\#(good),{"event_type":"booking.cancelled","booking_id":"bk-10"}]"#),
                                        status: 404, code: "not_found", index: 1, "cancel of a booking never accepted, at index 1")
            ValidationTests.expectError(try await post(good, bearer: staff.viewer.accessToken), status: 403, code: "forbidden",
                                        "a viewer sending events")
            ValidationTests.expectError(try await post(#"{"event_type":"booking.accepted","booking_id":"bk-9"}"#, bearer: staff.idleDriver.accessToken),
                                        status: 403, code: "forbidden", "a driver with no device")
            #expect(try await Self.lastSeq(live) == 0, "nothing was applied")
            #expect(try await post(good).status == 200, "the good event alone is applied")
        }
    }

    /// README: "`index` is the position in an array body". A single event's validation errors
    /// have none; its access and lifecycle errors must not claim one either.
    @Test("a single event (not an array) answers errors without an index, whatever the error")
    func singleEventErrorsHaveNoIndex() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let runner = staff.acme.device.id.uuidString.lowercased()
            let base = TripClock.base()
            func expectNoIndex(_ reply: LiveNode.Reply, status: Int, _ comment: Comment) {
                #expect(reply.status == status, "\(comment): \(reply.status) \(reply.body)")
                #expect((try? reply.error())?["index"] == nil, "\(comment): a single event has no index: \(reply.body)")
            }
            expectNoIndex(try await TripAPI.events(live, #"{"event_type":"booking.teleported","booking_id":"bk-1"}"#,
                                                   bearer: staff.admin.accessToken), status: 422, "unknown event_type (decoding)")
            expectNoIndex(try await TripAPI.events(live, #"{"event_type":"booking.accepted","booking_id":"bk-1","runner_id":"\#(UUID().uuidString)"}"#,
                                                   bearer: staff.admin.accessToken), status: 404, "unknown runner_id")
            expectNoIndex(try await TripAPI.events(live, #"{"event_type":"booking.accepted","booking_id":"bk-1","runner_id":"\#(runner)"}"#,
                                                   bearer: staff.viewer.accessToken), status: 403, "a viewer")
            expectNoIndex(try await TripAPI.events(live, #"{"event_type":"booking.cancelled","booking_id":"never"}"#,
                                                   bearer: staff.admin.accessToken), status: 404, "cancel of an unknown booking")
            #expect(try await TripAPI.accept(live, "bk-1", apiKey: staff.acme.apiKey).status == 201)
            expectNoIndex(try await TripAPI.events(live, #"{"event_type":"booking.delivery_confirmed","booking_id":"bk-1"}"#,
                                                   bearer: staff.admin.accessToken), status: 409, "delivery of an accepted trip (database)")
            let badLatitude = Self.location(0, base: base).replacingOccurrences(of: #""latitude":52.52"#, with: #""latitude":91"#)
            expectNoIndex(try await TripAPI.events(live, #"{"event_type":"runner.location_update","payload":\#(badLatitude)}"#,
                                                   apiKey: staff.acme.apiKey), status: 422, "latitude 91 (validation)")
        }
    }
}
