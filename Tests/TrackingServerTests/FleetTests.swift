import Foundation
import NIOCore
import NIOHTTP1
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Fleet operations over REST and WebSocket on a live node: a driver drives a recorded route past
/// three synced customers (geofence arrivals and departures once each, in order, through edge
/// jitter; distance and ETA falling on each approach), visit transition rules, driver and route
/// rooms, CRUD validation and tenant isolation.
@Suite("fleet: drivers, routes, visits", .serialized, .timeLimit(.minutes(4)))
struct FleetTests {
    /// Customer i sits on latitude 52 at longitude 13 + 0.01·i (about 685 m apart), radius 50 m.
    static let latitude = 52.0
    static let metresPerDegreeLongitude = 111_195.0 * cos(52.0 * .pi / 180)
    static func longitude(_ customer: Int, offsetMetres: Double = 0) -> Double {
        13.0 + 0.01 * Double(customer) + offsetMetres / metresPerDegreeLongitude
    }

    static func customerEvent(_ id: String, index: Int, lsn: Int) -> String {
        #"{"op":"c","after":{"id":"\#(id)","name":"Customer \#(index)","latitude":52.0,"longitude":\#(longitude(index)),"geofence_radius_m":50},"source":{"table":"customers","ts_ms":1763900000000,"lsn":\#(lsn)}}"#
    }

    static func syncCustomers(_ live: LiveNode, tenant: String, count: Int) async throws {
        try await TripSQL.withConnection(live) { connection in
            for i in 0..<count {
                let event = customerEvent("c\(i)", index: i, lsn: i + 1)
                _ = try await connection.query("SELECT pgtrack_sync_apply(\(tenant), \(event)::jsonb)", logger: TestCluster.logger).collect()
            }
        }
    }

    static func patch(_ live: LiveNode, _ path: String, bearer: String, json: String) async throws -> LiveNode.Reply {
        try await live.request(.PATCH, path, bearer: bearer, body: .init(string: json))
    }

    static func created(_ reply: LiveNode.Reply, _ what: String) throws -> String {
        guard reply.status == 201, let id = try reply.object()["id"] as? String else {
            throw WSClientError(description: "creating \(what) answered \(reply.status): \(reply.body.prefix(300))")
        }
        return id
    }

    /// A driver for `device` and a planned route of theirs; returns both ids.
    static func driverAndRoute(_ live: LiveNode, bearer: String, device: UUID) async throws -> (driver: String, route: String) {
        let driver = try created(try await live.post("/api/v1/drivers", bearer: bearer, json:
            #"{"name":"Dee","device_id":"\#(device.uuidString.lowercased())"}"#), "driver")
        let route = try created(try await live.post("/api/v1/routes", bearer: bearer, json:
            #"{"driver_id":"\#(driver)","scheduled_date":"2026-11-23"}"#), "route")
        return (driver, route)
    }

    /// One fix `offset` metres east of customer `customer` (negative: west), 7 m/s eastbound.
    static func fix(_ customer: Int, _ offset: Double, at time: Date, speed: Double = 7) -> TrackPoint {
        TrackPoint(time: time, latitude: latitude, longitude: longitude(customer, offsetMetres: offset), speed: speed, heading: 90)
    }

    /// Messages until `count` location updates reached `room` (events arrive after the POST
    /// returns, in seq order per socket), then everything else queued up to a pong.
    static func gather(_ socket: WSConnection, _ what: String, room: String, updates count: Int) async throws -> [WSMessage] {
        var messages: [WSMessage] = []
        while messages.filter({ $0.room == room && $0.type == "location_update" }).count < count {
            messages.append(try await socket.next("\(what): \(messages.count) so far"))
        }
        return messages + (try await socket.drain(what))
    }

    @Test("a recorded route past three customers: arrivals and departures once each, in order, through edge jitter; distance and ETA fall; rooms get only their events")
    func drivingTheRoute() async throws {
        try await LiveNode.run { live in
            try await live.withSockets { ws in
                let staff = try await TenantStaff.create(live)
                let admin = staff.admin.accessToken, dispatcher = staff.dispatcher.accessToken
                try await Self.syncCustomers(live, tenant: "acme", count: 3)
                let (otherDevice, otherKey) = try await live.repository.createDevice(tenant: staff.acme.tenant, name: "van-2", group: "default", grade: 0)

                let driverID = try Self.created(try await live.post("/api/v1/drivers", bearer: admin, json:
                    #"{"name":"Dee","device_id":"\#(staff.acme.device.id.uuidString.lowercased())","vehicle_plate":"B-PG 1","vehicle_type":"van"}"#), "driver")
                let otherDriverID = try Self.created(try await live.post("/api/v1/drivers", bearer: admin, json:
                    #"{"name":"Otto","device_id":"\#(otherDevice.id.uuidString.lowercased())"}"#), "other driver")
                let routeID = try Self.created(try await live.post("/api/v1/routes", bearer: dispatcher, json:
                    #"{"driver_id":"\#(driverID)","name":"Monday","scheduled_date":"2026-11-23"}"#), "route")
                let otherRouteID = try Self.created(try await live.post("/api/v1/routes", bearer: dispatcher, json:
                    #"{"driver_id":"\#(otherDriverID)","scheduled_date":"2026-11-23"}"#), "other route")
                var visits: [String] = []
                for i in 0..<3 {
                    visits.append(try Self.created(try await live.post("/api/v1/visits", bearer: dispatcher, json:
                        #"{"route_id":"\#(routeID)","customer_id":"c\#(i)","sequence":\#(i + 1),"visit_type":"delivery"}"#), "visit \(i)"))
                }
                _ = try Self.created(try await live.post("/api/v1/visits", bearer: dispatcher, json:
                    #"{"route_id":"\#(otherRouteID)","customer_id":"c2","sequence":1}"#), "other visit")
                for route in [routeID, otherRouteID] {
                    let started = try await Self.patch(live, "/api/v1/routes/\(route)/status", bearer: dispatcher, json: #"{"status":"in_progress"}"#)
                    #expect(started.status == 200 && (try? started.object()["status"] as? String) == "in_progress", "\(started.body)")
                }
                let active = try await live.get("/api/v1/routes/driver/\(driverID)/active", bearer: staff.driver.accessToken)
                #expect(active.status == 200 && (try? active.object()["id"] as? String) == routeID, "the driver reads their active route: \(active.body)")

                let socket = try await ws.open("/ws", bearer: admin)
                for room in ["tenant:acme", "driver:\(driverID)", "route:\(routeID)", "route:\(otherRouteID)", "driver:\(otherDriverID)"] {
                    try await socket.join(room)
                    _ = try await socket.expect("joined", room: room)
                    _ = try await socket.expect("snapshot", room: room)
                }

                var clock = TripClock.base(hoursAgo: 2)
                func tick() -> Date { clock = clock.addingTimeInterval(2); return clock }
                var received: [WSMessage] = []

                for i in 0..<3 {
                    // Approach from 400 m to 60 m west, one batch: distance and ETA fall toward visit i.
                    let approach = stride(from: -400.0, through: -60, by: 20).map { Self.fix(i, $0, at: tick()) }
                    try await live.postPositions(TrackPoint.array(approach), apiKey: staff.acme.apiKey, expecting: approach.count)
                    var batch = try await Self.gather(socket, "approach \(i)", room: "route:\(routeID)", updates: approach.count)
                    let updates = batch.filter { $0.room == "route:\(routeID)" && $0.type == "location_update" }
                    #expect(updates.count == approach.count, "every fix reaches the route room: \(updates.count)")
                    check(updates.allSatisfy { $0.object["next_visit_id"] as? String == visits[i] }, "next visit is \(i): \(updates.first?.description ?? "")")
                    let distances = updates.compactMap { $0.object["distance_to_next_m"] as? Double }
                    let etas = updates.compactMap { $0.object["eta_seconds"] as? Double }
                    check(distances.count == approach.count && zip(distances, distances.dropFirst()).allSatisfy { $0 > $1 }, "\(distances)")
                    check(etas.count == approach.count && zip(etas, etas.dropFirst()).allSatisfy { $0 >= $1 } && etas.first! > etas.last!, "\(etas)")
                    #expect(abs((distances.last ?? 0) - 60) < 1.5, "geodesic distance at 60 m: \(distances.last ?? -1)")
                    received += batch

                    // Edge jitter around the 50 m radius: arrives once, at the first fix inside.
                    let edge = [-55.0, -45, -55, -44, -52, -10, 0].map { Self.fix(i, $0, at: tick(), speed: 1) }
                    for point in edge { try await live.postPositions(point.json(), apiKey: staff.acme.apiKey, expecting: 1) }
                    batch = try await Self.gather(socket, "arrival \(i)", room: "route:\(routeID)", updates: edge.count)
                    received += batch
                    let arrivals = batch.filter { $0.type == "visit_update" && $0.room == "route:\(routeID)" }
                    check(arrivals.map { $0.object["status"] as? String } == ["arrived"], "one arrival at \(i): \(arrivals)")
                    #expect(arrivals.first?.object["id"] as? String == visits[i])
                    check(isoDate(arrivals.first?.object["arrived_at"]).map { abs($0.timeIntervalSince(edge[1].time)) < 0.01 } == true,
                            "arrived at the first fix inside: \(arrivals.first?.description ?? "")")

                    for status in ["in_progress", "completed"] {
                        let reply = try await Self.patch(live, "/api/v1/visits/\(visits[i])/status", bearer: dispatcher, json: #"{"status":"\#(status)"}"#)
                        #expect(reply.status == 200, "\(status): \(reply.body)")
                    }

                    // Leaving with jitter inside radius + margin (80 m): no departure until 90 m.
                    let leave = [60.0, 40, 70, 78, 65, 90, 70, 120].map { Self.fix(i, $0, at: tick()) }
                    for point in leave { try await live.postPositions(point.json(), apiKey: staff.acme.apiKey, expecting: 1) }
                    batch = try await Self.gather(socket, "departure \(i)", room: "route:\(routeID)", updates: leave.count)
                    received += batch
                    let departures = batch.filter { $0.type == "visit_update" && $0.room == "route:\(routeID)" && $0.status == "departed" }
                    #expect(departures.count == 1 && departures.first?.object["id"] as? String == visits[i], "\(departures)")
                    check(isoDate(departures.first?.object["departed_at"]).map { abs($0.timeIntervalSince(leave[5].time)) < 0.01 } == true)
                }

                // The whole story, in order, in the route room, the driver room and the tenant room.
                var expected: [String] = []
                for visit in visits { expected += ["\(visit) arrived", "\(visit) in_progress", "\(visit) completed", "\(visit) departed"] }
                for room in ["route:\(routeID)", "driver:\(driverID)", "tenant:acme"] {
                    let story = received.filter { $0.room == room && $0.type == "visit_update" }
                        .map { "\($0.object["id"] as? String ?? "?") \($0.status ?? "?")" }
                    #expect(story == expected, "\(room): \(story)")
                    let seqs = received.filter { $0.room == room }.compactMap(\.seq)
                    #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count, "\(room) seqs ascend once each")
                }
                let causes = received.filter { $0.room == "route:\(routeID)" && $0.type == "visit_update" }.map { $0.object["cause"] as? String ?? "?" }
                check(causes == Array(repeating: ["geofence", "manual", "manual", "geofence"], count: 3).flatMap { $0 })
                check(!received.contains { $0.room == "route:\(otherRouteID)" || $0.room == "driver:\(otherDriverID)" },
                        "the other driver's rooms get nothing of this route")

                // The other driver's fix: only their rooms and the tenant room.
                try await live.postPositions(Self.fix(2, -300, at: tick()).json(), apiKey: otherKey, expecting: 1)
                let other = try await Self.gather(socket, "the other driver's fix", room: "driver:\(otherDriverID)", updates: 1)
                #expect(Set(other.compactMap(\.room)) == ["tenant:acme", "route:\(otherRouteID)", "driver:\(otherDriverID)"], "\(other)")

                // Active drivers: both, with their latest (enriched) position.
                try await socket.send(#"{"action":"active_drivers","minutes":1440}"#)
                let answer = try await socket.expect("active_drivers")
                let listed = (answer.object["drivers"] as? [[String: Any]]) ?? []
                check(Set(listed.compactMap { $0["id"] as? String }) == [driverID, otherDriverID], "\(answer)")
                let otto = listed.first { $0["id"] as? String == otherDriverID }
                #expect((otto?["position"] as? [String: Any])?["next_visit_id"] != nil, "latest position carries its enrichment: \(answer)")

                // Playback history: the route's fixes in order, paged.
                let page = try await live.get("/api/v1/routes/\(routeID)/history?limit=10", bearer: dispatcher).object()
                let points = (page["points"] as? [[String: Any]]) ?? []
                #expect(points.count == 10 && page["next_cursor"] is String, "\(page)")
                let times = points.compactMap { isoDate($0["timestamp"]) }
                check(times == times.sorted() && points.allSatisfy { $0["route_id"] as? String == routeID })
                let driverHistory = try await live.get("/api/v1/drivers/\(driverID)/history?limit=1000", bearer: dispatcher).object()
                let driverPoints = (driverHistory["points"] as? [Any]) ?? []
                let expectedFixes = 3 * (18 + 7 + 8)
                #expect(driverPoints.count == expectedFixes, "every fix of the driver's device")
            }
        }
    }

    @Test("visit transitions: one step at a time, 409 naming the current status; idempotent repeat; route status rules")
    func transitions() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let dispatcher = staff.dispatcher.accessToken
            try await Self.syncCustomers(live, tenant: "acme", count: 1)
            let (driverID, routeID) = try await Self.driverAndRoute(live, bearer: dispatcher, device: staff.acme.device.id)
            let visitID = try Self.created(try await live.post("/api/v1/visits", bearer: dispatcher, json:
                #"{"route_id":"\#(routeID)","customer_id":"c0","sequence":1}"#), "visit")
            let path = "/api/v1/visits/\(visitID)/status"

            let skip = try await Self.patch(live, path, bearer: dispatcher, json: #"{"status":"completed"}"#)
            TripAPI.expectConflict(skip, currentStatus: "pending", "pending cannot jump to completed")
            #expect(((try? skip.error())?["message"] as? String)?.contains("only move to arrived") == true, "\(skip.body)")
            for status in ["arrived", "in_progress", "completed", "departed"] {
                let reply = try await Self.patch(live, path, bearer: dispatcher, json: #"{"status":"\#(status)"}"#)
                #expect(reply.status == 200 && (try? reply.object()["status"] as? String) == status, "\(status): \(reply.body)")
            }
            let again = try await Self.patch(live, path, bearer: dispatcher, json: #"{"status":"departed"}"#)
            #expect(again.status == 200, "repeating the current status is idempotent: \(again.body)")
            TripAPI.expectConflict(try await Self.patch(live, path, bearer: dispatcher, json: #"{"status":"pending"}"#),
                                   currentStatus: "departed", "no way back")
            ValidationTests.expectError(try await Self.patch(live, path, bearer: dispatcher, json: #"{"status":"lost"}"#),
                                        status: 422, code: "validation_failed", "unknown status")
            #expect(try await Self.patch(live, path, bearer: staff.viewer.accessToken, json: #"{"status":"departed"}"#).status == 403)

            TripAPI.expectConflict(try await Self.patch(live, "/api/v1/routes/\(routeID)/status", bearer: dispatcher, json: #"{"status":"completed"}"#),
                                   currentStatus: "planned", "a planned route starts before it completes")
            let second = try Self.created(try await live.post("/api/v1/routes", bearer: dispatcher, json:
                #"{"driver_id":"\#(driverID)","scheduled_date":"2026-11-24"}"#), "second route")
            #expect(try await Self.patch(live, "/api/v1/routes/\(routeID)/status", bearer: dispatcher, json: #"{"status":"in_progress"}"#).status == 200)
            TripAPI.expectConflict(try await Self.patch(live, "/api/v1/routes/\(second)/status", bearer: dispatcher, json: #"{"status":"in_progress"}"#),
                                   currentStatus: "planned", "one route in progress per driver")
        }
    }

    @Test("CRUD: JSON 4xx a person can act on, roles, driver reads their own, other tenant is 404")
    func crudValidation() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let admin = staff.admin.accessToken
            try await Self.syncCustomers(live, tenant: "acme", count: 1)
            let device = staff.acme.device.id.uuidString.lowercased()

            ValidationTests.expectError(try await live.post("/api/v1/drivers", bearer: admin, json: #"{"vehicle_type":"van"}"#),
                                        status: 422, code: "validation_failed", field: "name", "name is required")
            ValidationTests.expectError(try await live.post("/api/v1/drivers", bearer: admin, json: #"{"name":"A","vehicle_type":"tank"}"#),
                                        status: 422, code: "validation_failed", field: "vehicle_type", "vehicle type from the list")
            ValidationTests.expectError(try await live.post("/api/v1/drivers", bearer: admin, json: #"{"name":"A","device_id":"nope"}"#),
                                        status: 422, code: "validation_failed", field: "device_id", "device id must be a UUID")
            ValidationTests.expectError(try await live.post("/api/v1/drivers", bearer: admin, json: #"{"name":"A","device_id":"\#(UUID().uuidString)"}"#),
                                        status: 422, code: "validation_failed", field: "device_id", "unknown device")
            TenantStaff.expectForbidden(try await live.post("/api/v1/drivers", bearer: staff.viewer.accessToken, json: #"{"name":"A"}"#),
                                        role: "viewer", allowed: "admin or dispatcher", "viewers read only")
            let driverID = try Self.created(try await live.post("/api/v1/drivers", bearer: admin, json: #"{"name":"Dee","device_id":"\#(device)"}"#), "driver")
            let idleID = try Self.created(try await live.post("/api/v1/drivers", bearer: admin, json: #"{"name":"Idle"}"#), "idle driver")
            let taken = try await live.post("/api/v1/drivers", bearer: admin, json: #"{"name":"B","device_id":"\#(device)"}"#)
            ValidationTests.expectError(taken, status: 409, code: "conflict", "a device drives for one driver")

            ValidationTests.expectError(try await live.post("/api/v1/routes", bearer: admin, json: #"{"driver_id":"\#(driverID)","scheduled_date":"2026-02-30"}"#),
                                        status: 422, code: "validation_failed", field: "scheduled_date", "a real date")
            ValidationTests.expectError(try await live.post("/api/v1/routes", bearer: admin, json: #"{"driver_id":"\#(UUID().uuidString)","scheduled_date":"2026-02-03"}"#),
                                        status: 422, code: "validation_failed", field: "driver_id", "unknown driver")
            let routeID = try Self.created(try await live.post("/api/v1/routes", bearer: admin, json: #"{"driver_id":"\#(driverID)","scheduled_date":"2026-02-03"}"#), "route")
            ValidationTests.expectError(try await live.post("/api/v1/visits", bearer: admin, json: #"{"route_id":"\#(routeID)","customer_id":"ghost","sequence":1}"#),
                                        status: 422, code: "validation_failed", field: "customer_id", "customer must be synced")
            ValidationTests.expectError(try await live.post("/api/v1/visits", bearer: admin,
                                        json: #"{"route_id":"\#(routeID)","customer_id":"c0","sequence":1,"window_start":"2026-02-03T10:00:00Z","window_end":"2026-02-03T09:00:00Z"}"#),
                                        status: 422, code: "validation_failed", field: "window_end", "window in order")
            let visitID = try Self.created(try await live.post("/api/v1/visits", bearer: admin, json: #"{"route_id":"\#(routeID)","customer_id":"c0","sequence":1}"#), "visit")
            ValidationTests.expectError(try await live.post("/api/v1/visits", bearer: admin, json: #"{"route_id":"\#(routeID)","customer_id":"c0","sequence":1}"#),
                                        status: 409, code: "conflict", field: "sequence", "sequence unique in the route")

            // Reads: viewer sees all; the driver only their own; the idle driver nothing.
            #expect(try await live.get("/api/v1/drivers/\(idleID)", bearer: staff.viewer.accessToken).status == 200)
            #expect(try await live.get("/api/v1/visits/route/\(routeID)", bearer: staff.driver.accessToken).status == 200)
            #expect(try await live.get("/api/v1/drivers/\(idleID)", bearer: staff.driver.accessToken).status == 404)
            #expect(try await live.get("/api/v1/visits/\(visitID)", bearer: staff.idleDriver.accessToken).status == 404)
            let mine = try await live.get("/api/v1/drivers", bearer: staff.driver.accessToken).object()
            check(((mine["drivers"] as? [[String: Any]]) ?? []).compactMap { $0["id"] as? String } == [driverID])
            let visitsOfDriver = try await live.get("/api/v1/visits/driver/\(driverID)", bearer: admin)
            #expect(visitsOfDriver.status == 200)
            let patched = try await Self.patch(live, "/api/v1/drivers/\(driverID)", bearer: admin, json: #"{"vehicle_plate":"B-X 2","status":"on_leave"}"#)
            #expect(patched.status == 200 && (try? patched.object()["status"] as? String) == "on_leave", "\(patched.body)")

            // Another tenant: every id is a 404, and its lists are empty.
            let globex = try await TestTenant.create(live.repository, id: "globex")
            let outsider = try await live.user(.admin, in: globex.tenant)
            for path in ["/api/v1/drivers/\(driverID)", "/api/v1/routes/\(routeID)", "/api/v1/visits/\(visitID)",
                         "/api/v1/visits/route/\(routeID)", "/api/v1/routes/driver/\(driverID)/today", "/api/v1/drivers/\(driverID)/history"] {
                ValidationTests.expectError(try await live.get(path, bearer: outsider.accessToken), status: 404, code: "not_found", "\(path) from globex")
            }
            ValidationTests.expectError(try await Self.patch(live, "/api/v1/visits/\(visitID)/status", bearer: outsider.accessToken, json: #"{"status":"arrived"}"#),
                                        status: 404, code: "not_found", "another tenant's visit")
            #expect(try await live.delete("/api/v1/routes/\(routeID)", bearer: outsider.accessToken).status == 404)
            let theirs = try await live.get("/api/v1/drivers", bearer: outsider.accessToken).object()
            #expect((theirs["drivers"] as? [Any])?.isEmpty == true, "another tenant lists none of acme's drivers: \(theirs)")
            #expect(try await live.delete("/api/v1/routes/\(routeID)", bearer: admin).status == 204)
            #expect(try await live.get("/api/v1/visits/\(visitID)", bearer: admin).status == 404, "a route's visits go with it")
        }
    }
}
