import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Input checks of the trip endpoints and the tenant's trip settings.
@Suite("trips: validation and settings", .serialized, .timeLimit(.minutes(3)))
struct TripValidationTests {
    @Test("a booking id that cannot exist in the path answers 404 on every trip endpoint")
    func badBookingIDs() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let admin = staff.admin.accessToken
            let device = staff.acme.device.id.uuidString.lowercased()
            for id in ["has%20space", "semi%3Bcolon", String(repeating: "a", count: 41), "%C3%A9t%C3%A9", "quote%27s"] {
                let posts = [("accept", #"{"device_id":"\#(device)"}"#), ("complete", ""), ("cancel", "")]
                for (action, body) in posts {
                    ValidationTests.expectError(try await live.post("/api/v1/bookings/\(id)/\(action)", bearer: admin, json: body),
                                                status: 404, code: "not_found", "POST \(action) of \(id)")
                }
                for suffix in ["", "/route", "/route?format=gpx", "/points"] {
                    ValidationTests.expectError(try await live.get("/api/v1/tracking/\(id)\(suffix)", bearer: admin),
                                                status: 404, code: "not_found", "GET tracking/\(id)\(suffix)")
                }
            }
            // 40 characters of every allowed kind is a valid id.
            let longest = "Aa0._:-" + String(repeating: "z", count: 33)
            #expect(longest.count == 40)
            #expect(try await TripAPI.accept(live, longest, bearer: admin, device: device).status == 201)
            #expect(try await TripAPI.trip(live, longest, bearer: admin)["booking_id"] as? String == longest)
            let trips = try await TripSQL.withConnection(live) { connection in
                try await Fixes.count("SELECT count(*)::int FROM trips", on: connection)
            }
            #expect(trips == 1)
        }
    }

    @Test("bad JSON bodies: 400 on accept, events and settings; a bad device_id 422")
    func badBodies() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let admin = staff.admin.accessToken
            for body in ["{", "{\"device_id\":", "nonsense", "[1,2"] {
                ValidationTests.expectError(try await live.post("/api/v1/bookings/b-1/accept", bearer: admin, json: body), status: 400,
                                            code: "malformed_json", "accept with \(body)")
                ValidationTests.expectError(try await TripAPI.events(live, body, bearer: admin), status: 400, code: "malformed_json",
                                            "events with \(body)")
                ValidationTests.expectError(try await live.put("/api/v1/settings/trips", bearer: admin, json: body), status: 400,
                                            code: "malformed_json", "settings with \(body)")
            }
            ValidationTests.expectError(try await live.post("/api/v1/bookings/b-1/accept", bearer: admin, json: #"{"device_id":"van-7"}"#),
                                        status: 422, code: "validation_failed", field: "device_id", "device_id that is no UUID")
            ValidationTests.expectError(try await live.post("/api/v1/bookings/b-1/accept", bearer: admin, json: #"{"device_id":7}"#),
                                        status: 422, code: "validation_failed", field: "device_id", "device_id that is a number")
            ValidationTests.expectError(try await TripAPI.events(live, "", bearer: admin), status: 400, code: "malformed_json", "no body")
            #expect(try await TripSQL.withConnection(live) { try await Fixes.count("SELECT count(*)::int FROM trips", on: $0) } == 0)
        }
    }

    @Test("settings: everyone in the tenant reads the defaults; only admins change them; out-of-range values 422 and change nothing")
    func settings() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            for (role, user) in [(role: "admin", user: staff.admin)] + staff.nonAdmins {
                let reply = try await live.get("/api/v1/settings/trips", bearer: user.accessToken)
                #expect(reply.status == 200, "\(role): \(reply.body)")
                let object = try reply.object()
                #expect(object["trip_jitter_metres"] as? Double == 10, "\(role): \(object)")
                #expect(object["trip_stop_radius_metres"] as? Double == 30)
                #expect(object["trip_stop_seconds"] as? Int == 300)
            }
            let change = #"{"trip_jitter_metres":25.5,"trip_stop_radius_metres":40,"trip_stop_seconds":600}"#
            for (role, user) in staff.nonAdmins {
                ValidationTests.expectError(try await live.put("/api/v1/settings/trips", bearer: user.accessToken, json: change),
                                            status: 403, code: "forbidden", "\(role) changing settings")
            }
            let byDevice = try await live.request(.PUT, "/api/v1/settings/trips", apiKey: staff.acme.apiKey, body: .init(string: change))
            ValidationTests.expectError(byDevice, status: 403, code: "forbidden", "a device key changing settings")

            let invalid: [(String, String)] = [
                (#"{"trip_jitter_metres":-1,"trip_stop_radius_metres":30,"trip_stop_seconds":300}"#, "trip_jitter_metres"),
                (#"{"trip_jitter_metres":1000.5,"trip_stop_radius_metres":30,"trip_stop_seconds":300}"#, "trip_jitter_metres"),
                (#"{"trip_jitter_metres":10,"trip_stop_radius_metres":0.5,"trip_stop_seconds":300}"#, "trip_stop_radius_metres"),
                (#"{"trip_jitter_metres":10,"trip_stop_radius_metres":5001,"trip_stop_seconds":300}"#, "trip_stop_radius_metres"),
                (#"{"trip_jitter_metres":10,"trip_stop_radius_metres":30,"trip_stop_seconds":9}"#, "trip_stop_seconds"),
                (#"{"trip_jitter_metres":10,"trip_stop_radius_metres":30,"trip_stop_seconds":86401}"#, "trip_stop_seconds"),
                (#"{"trip_jitter_metres":10,"trip_stop_radius_metres":30}"#, "trip_stop_seconds"),
                (#"{"trip_jitter_metres":"10","trip_stop_radius_metres":30,"trip_stop_seconds":300}"#, "trip_jitter_metres"),
                (#"{"trip_jitter_metres":null,"trip_stop_radius_metres":30,"trip_stop_seconds":300}"#, "trip_jitter_metres"),
            ]
            for (body, field) in invalid {
                ValidationTests.expectError(try await live.put("/api/v1/settings/trips", bearer: staff.admin.accessToken, json: body),
                                            status: 422, code: "validation_failed", field: field, "PUT \(body)")
            }
            let unchanged = try await live.get("/api/v1/settings/trips", bearer: staff.admin.accessToken).object()
            #expect(unchanged["trip_jitter_metres"] as? Double == 10 && unchanged["trip_stop_seconds"] as? Int == 300, "\(unchanged)")

            // The limits themselves are valid.
            for body in [#"{"trip_jitter_metres":0,"trip_stop_radius_metres":1,"trip_stop_seconds":10}"#,
                         #"{"trip_jitter_metres":1000,"trip_stop_radius_metres":5000,"trip_stop_seconds":86400}"#] {
                #expect(try await live.put("/api/v1/settings/trips", bearer: staff.admin.accessToken, json: body).status == 200, "\(body)")
            }
            let put = try await live.put("/api/v1/settings/trips", bearer: staff.admin.accessToken, json: change)
            #expect(put.status == 200, "\(put.body)")
            let stored = try await live.get("/api/v1/settings/trips", bearer: staff.viewer.accessToken).object()
            #expect(stored["trip_jitter_metres"] as? Double == 25.5)
            #expect(stored["trip_stop_radius_metres"] as? Double == 40)
            #expect(stored["trip_stop_seconds"] as? Int == 600)

            // Another tenant keeps its own defaults.
            let globex = try await TestTenant.create(live.repository, id: "globex")
            let globexAdmin = try await live.user(.admin, in: globex.tenant)
            let theirs = try await live.get("/api/v1/settings/trips", bearer: globexAdmin.accessToken).object()
            #expect(theirs["trip_jitter_metres"] as? Double == 10, "\(theirs)")

            // A trip accepted now copies the new settings; one accepted before keeps the old.
            let accepted = try await TripAPI.accept(live, "after", apiKey: staff.acme.apiKey)
            let settings = try accepted.object()["settings"] as? [String: Any] ?? [:]
            #expect(settings["jitter_metres"] as? Double == 25.5 && settings["stop_radius_metres"] as? Double == 40
                    && settings["stop_seconds"] as? Int == 600, "\(settings)")
        }
    }

    /// README: 400 is for a body that is not JSON; a field "of the wrong type" is 422 naming it.
    @Test("settings: a trip_stop_seconds that is valid JSON but no whole number is 422 naming the field, not 400 'not valid JSON'")
    func fractionalStopSeconds() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            for value in ["30.5", "1e30"] {
                let body = #"{"trip_jitter_metres":10,"trip_stop_radius_metres":30,"trip_stop_seconds":\#(value)}"#
                #expect((try? JSONSerialization.jsonObject(with: Data(body.utf8))) != nil, "the body is valid JSON")
                ValidationTests.expectError(try await live.put("/api/v1/settings/trips", bearer: staff.admin.accessToken, json: body),
                                            status: 422, code: "validation_failed", field: "trip_stop_seconds", "trip_stop_seconds \(value)")
            }
        }
    }

    @Test("points and route query parameters are checked before any work")
    func queryParameters() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            #expect(try await TripAPI.accept(live, "q-1", apiKey: setup.apiKey).status == 201)
            let empty = try await live.get("/api/v1/tracking/q-1/points", apiKey: setup.apiKey)
            #expect(empty.status == 200)
            #expect(try empty.object()["points"] as? [Any] != nil)
            #expect(try empty.object()["next_cursor"] is NSNull)
            for (query, field) in [("format=xml", "format"), ("points=2", "points"), ("simplify=", "simplify")] {
                ValidationTests.expectError(try await live.get("/api/v1/tracking/q-1/route?\(query)", apiKey: setup.apiKey), status: 422,
                                            code: "validation_failed", field: field, "route?\(query)")
            }
            for format in ["geojson", "json", "GPX", "csv"] {
                #expect(try await live.get("/api/v1/tracking/q-1/route?format=\(format)", apiKey: setup.apiKey).status == 200, "\(format)")
            }
        }
    }
}
