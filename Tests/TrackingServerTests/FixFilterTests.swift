import Foundation
import NIOCore
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// The tenant's fix filters: flagged or dropped, never the marker, batches with good and bad
/// fixes, plain SQL writers filtered alike.
@Suite("Fix filters", .timeLimit(.minutes(3)))
struct FixFilterTests {
    /// A fix at `metres` north of 52.5/13.4, `secondsAgo` before the test started.
    static func fix(_ secondsAgo: Double, north metres: Double = 0, extra: String = "") -> String {
        let time = Self.time(secondsAgo)
        return #"{"latitude":\#(52.5 + metres / 111_195),"longitude":13.4,"timestamp":"\#(time.iso8601)"\#(extra)}"#
    }

    /// Whole seconds, so every time below is exact in JSON (milliseconds) and in the database.
    static let start = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down))

    static func settings(_ live: LiveNode, _ admin: TestUser, _ json: String) async throws {
        let reply = try await live.put("/api/v1/settings/filters", bearer: admin.accessToken, json: json)
        guard reply.status == 200 else { throw SSEClientError(description: "PUT filters answered \(reply.status): \(reply.body)") }
    }

    /// (filter_reason) of the device's stored fixes, oldest first.
    static func reasons(_ live: LiveNode, device: UUID) async throws -> [String?] {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            var reasons: [String?] = []
            for try await reason in try await connection.query(
                "SELECT filter_reason FROM positions WHERE device_id = \(device) ORDER BY fix_time, id",
                logger: TestCluster.logger).decode(String?.self) { reasons.append(reason) }
            return reasons
        }
    }

    static func marker(_ live: LiveNode, device: UUID) async throws -> Date? {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            for try await time in try await connection.query(
                "SELECT fix_time FROM latest_positions WHERE device_id = \(device)", logger: TestCluster.logger).decode(Date.self) {
                return time
            }
            return nil
        }
    }

    static func time(_ secondsAgo: Double) -> Date { start.addingTimeInterval(-secondsAgo) }

    static func close(_ a: Date?, _ b: Date) -> Bool { a.map { abs($0.timeIntervalSince(b)) < 0.002 } ?? false }

    @Test("settings: defaults off, PUT validates each value, dispatchers read but cannot change")
    func settingsAPI() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let dispatcher = try await live.user(.dispatcher, in: setup.tenant)
            let initial = try await live.get("/api/v1/settings/filters", bearer: dispatcher.accessToken).object()
            #expect(initial["mode"] as? String == "flag")
            #expect(initial["zero"] as? Bool == false)
            #expect(initial["max_speed"] is NSNull)
            let changed = try await live.put("/api/v1/settings/filters", bearer: admin.accessToken,
                                             json: #"{"mode":"drop","zero":true,"max_speed":50}"#)
            #expect(changed.status == 200)
            #expect(try changed.object()["max_speed"] as? Double == 50)
            #expect(try changed.object()["mode"] as? String == "drop")
            for bad in [#"{"mode":"hide"}"#, #"{"max_speed":-1}"#, #"{"zero":"yes"}"#, #"{"speed_limit":3}"#] {
                let reply = try await live.put("/api/v1/settings/filters", bearer: admin.accessToken, json: bad)
                #expect(reply.status == 422, "\(bad): \(reply.body)")
                #expect((try reply.error()["message"] as? String)?.isEmpty == false)
            }
            let forbidden = try await live.put("/api/v1/settings/filters", bearer: dispatcher.accessToken, json: #"{"zero":false}"#)
            #expect(forbidden.status == 403)
            let off = try await live.put("/api/v1/settings/filters", bearer: admin.accessToken, json: #"{"max_speed":null}"#)
            #expect(try off.object()["max_speed"] is NSNull)
            #expect(try off.object()["zero"] as? Bool == true, "fields left out keep their value")
        }
    }

    @Test("flag mode: a batch of good and bad fixes; bad ones stored with their reason, pushed as filtered, marker on the last good one")
    func flagBatch() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin, #"{"invalid":true,"zero":true,"accuracy_metres":100,"future_seconds":30}"#)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            let future = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down) + 120).iso8601
            let batch = "[" + [
                Self.fix(50),
                Self.fix(40, north: 100, extra: #","attributes":{"valid":false}"#),
                #"{"latitude":0,"longitude":0,"timestamp":"\#(Self.time(30).iso8601)"}"#,
                Self.fix(20, north: 50),
                Self.fix(10, north: 500, extra: #","accuracy":800"#),
                #"{"latitude":52.6,"longitude":13.4,"timestamp":"\#(future)"}"#,
            ].joined(separator: ",") + "]"
            let reply = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: batch)
            #expect(reply.status == 202, "\(reply.body)")
            let outcome = try reply.object()
            #expect(outcome["accepted"] as? Int == 2)
            #expect(outcome["filtered"] as? Int == 4)
            #expect(outcome["dropped"] as? Int == 0)
            #expect(try await Self.reasons(live, device: setup.device.id) == [nil, "invalid", "zero", nil, "accuracy", "future"])
            #expect(Self.close(try await Self.marker(live, device: setup.device.id), Self.time(20)), "the last good fix is the marker")

            let events = try await stream.collect(6)
            let payloads = try events.map { try $0.object() }
            check(payloads.map { $0["filtered"] as? String } == [nil, "invalid", "zero", nil, "accuracy", "future"])
            check(payloads.map { $0["latest"] as? Bool } == [false, false, false, true, false, false])
            let latest = try await live.get("/api/v1/devices/\(setup.device.id.uuidString.lowercased())/position", apiKey: setup.apiKey)
            #expect(try latest.object()["timestamp"] as? String == Self.time(20).iso8601)
        }
    }

    @Test("drop mode: filtered fixes are not stored and not pushed; the client is told how many")
    func dropMode() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin, #"{"mode":"drop","zero":true}"#)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            let batch = "[" + [#"{"latitude":0,"longitude":0,"timestamp":"\#(Self.time(30).iso8601)"}"#, Self.fix(20)]
                .joined(separator: ",") + "]"
            let reply = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: batch)
            #expect(try reply.object()["accepted"] as? Int == 1)
            #expect(try reply.object()["dropped"] as? Int == 1)
            #expect(try await Self.reasons(live, device: setup.device.id) == [nil])
            let update = try await stream.next("the good fix")
            #expect(update.seq == 1, "the dropped fix took no seq")
            #expect(try update.object()["latest"] as? Bool == true)

            let onlyBad = try await live.post("/api/v1/locations", apiKey: setup.apiKey,
                                              json: #"{"latitude":0,"longitude":0,"timestamp":"\#(Self.time(10).iso8601)"}"#)
            #expect(try onlyBad.object()["accepted"] as? Int == 0)
            #expect(Self.close(try await Self.marker(live, device: setup.device.id), Self.time(20)))
        }
    }

    @Test("duplicate, minimum period, implied speed and parked jitter compare with the last accepted fix")
    func sequenceFilters() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin,
                                    #"{"duplicate":true,"min_period_seconds":5,"max_speed":70,"jitter_metres":20,"stationary_speed":1}"#)
            try await live.postPositions(Self.fix(300), apiKey: setup.apiKey, expecting: 1)
            // Posted again (a retry): a duplicate.
            let retry = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: Self.fix(300))
            #expect(try retry.object()["filtered"] as? Int == 1)
            let batch = "[" + [
                Self.fix(298, north: 100),                          // 2 s later: min_period
                Self.fix(290, north: 10_000),                       // 10 km in 10 s: max_speed
                Self.fix(280, north: 8, extra: #","speed":0.2"#),    // 8 m while parked: jitter
                Self.fix(270, north: 8, extra: #","speed":5"#),      // 8 m but moving: accepted
                Self.fix(260, north: 600),                          // 592 m in 10 s = 59 m/s, from the last accepted: accepted
                Self.fix(250, north: 600, extra: #","speed":90"#),   // reported speed above the maximum
            ].joined(separator: ",") + "]"
            let reply = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: batch)
            #expect(try reply.object()["accepted"] as? Int == 2, "\(reply.body)")
            #expect(try await Self.reasons(live, device: setup.device.id)
                    == [nil, "duplicate", "min_period", "max_speed", "jitter", nil, nil, "max_speed"])
            #expect(Self.close(try await Self.marker(live, device: setup.device.id), Self.time(260)))
        }
    }

    @Test("past limit, and a plain SQL writer is filtered the same way")
    func pastAndSQL() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin, #"{"past_seconds":3600,"zero":true}"#)
            let old = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: Self.fix(7_200))
            #expect(try old.object()["filtered"] as? Int == 1)
            #expect(try await Self.marker(live, device: setup.device.id) == nil, "a filtered fix never creates the marker")
            try await TestDatabase.withConnection(live.databaseURL) { connection in
                _ = try await connection.query("""
                    INSERT INTO positions (tenant_id, device_id, fix_time, location)
                    VALUES (\(setup.tenant.rawValue), \(setup.device.id), \(Self.time(60)), ST_MakePoint(0, 0)::geography),
                           (\(setup.tenant.rawValue), \(setup.device.id), \(Self.time(50)), ST_MakePoint(13.4, 52.5)::geography)
                    """, logger: TestCluster.logger)
            }
            #expect(try await Self.reasons(live, device: setup.device.id) == ["past", "zero", nil])
            #expect(Self.close(try await Self.marker(live, device: setup.device.id), Self.time(50)))
        }
    }

    @Test("a device protocol batch is filtered like REST (Traccar valid:false)")
    func protocolFiltered() async throws {
        try await LiveNode.run { live in
            let tenant = TenantID("proto")!
            try await live.repository.createTenant(id: tenant, name: "Proto")
            let (device, key) = try await live.repository.createDevice(tenant: tenant, name: "t", group: "default", grade: 0,
                                                                       uniqueID: DeviceUniqueID("777"))
            let admin = try await live.user(.admin, in: tenant)
            try await Self.settings(live, admin, #"{"invalid":true}"#)
            let body = """
                [{"fixTime":"\(Self.time(20).iso8601)","latitude":52.5,"longitude":13.4,"valid":true,"attributes":{"uniqueId":"777"}},
                 {"fixTime":"\(Self.time(10).iso8601)","latitude":52.6,"longitude":13.4,"valid":false,"attributes":{"uniqueId":"777"}}]
                """
            let reply = try await live.post("/api/v1/ingest/traccar", apiKey: key, json: body)
            #expect(try reply.object()["accepted"] as? Int == 1)
            #expect(try reply.object()["filtered"] as? Int == 1)
            #expect(try await Self.reasons(live, device: device.id) == [nil, "invalid"])
            #expect(Self.close(try await Self.marker(live, device: device.id), Self.time(20)))
        }
    }
}

extension FixFilterTests {
    @Test("with a broadcast throttle, a filtered fix never displaces the held accepted one")
    func throttleKeepsAccepted() async throws {
        try await LiveNode.run({ $0.minBroadcastInterval = .seconds(1) }) { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin, #"{"zero":true}"#)
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            let batch = "[" + [Self.fix(50), Self.fix(40, north: 10),
                               #"{"latitude":0,"longitude":0,"timestamp":"\#(Self.time(30).iso8601)"}"#].joined(separator: ",") + "]"
            let reply = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: batch)
            #expect(try reply.object()["filtered"] as? Int == 1)
            let events = try await stream.collect(2)
            check(try events.map { try $0.object()["timestamp"] as? String } == [Self.time(50).iso8601, Self.time(40).iso8601],
                    "the held update released after the interval is the accepted fix, not the filtered one")
            check(try events.map { try $0.object()["latest"] as? Bool } == [false, true])
        }
    }
}

extension FixFilterTests {
    @Test("a flagged fix is no point of the trip: metadata, points, route and the booking snapshot leave it out")
    func tripIgnoresFiltered() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin, #"{"max_speed":70}"#)
            let accept = try await live.post("/api/v1/bookings/b-1/accept", apiKey: setup.apiKey, json: "{}")
            #expect(accept.status == 201, "\(accept.body)")
            let batch = "[" + [Self.fix(30), Self.fix(20, north: 100), Self.fix(10, north: 50_000)].joined(separator: ",") + "]"
            let reply = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: batch)
            #expect(try reply.object()["filtered"] as? Int == 1, "\(reply.body)")
            let trip = try await live.get("/api/v1/tracking/b-1", apiKey: setup.apiKey).object()
            #expect(trip["point_count"] as? Int == 2)
            #expect(((trip["distance_metres"] as? Double) ?? 0) < 200, "the 50 km outlier adds no distance: \(trip)")
            let points = try await live.get("/api/v1/tracking/b-1/points", apiKey: setup.apiKey).object()
            #expect((points["points"] as? [Any])?.count == 2)
            let route = try await live.get("/api/v1/tracking/b-1/route?points=true", apiKey: setup.apiKey)
            #expect(!route.body.contains("52.9"), "the outlier (52.95) is not in the route")
            let stream = try await live.stream("/api/v1/bookings/b-1/stream", apiKey: setup.apiKey)
            let snapshot = try await stream.opening().object()
            let positions = try #require(snapshot["positions"] as? [[String: Any]])
            #expect(positions.first?["timestamp"] as? String == Self.time(20).iso8601)
        }
    }
}

extension FixFilterTests {
    @Test("a filtered fix does not start an accepted trip (it is no point); the first accepted one does", arguments: ["flag", "drop"])
    func filteredFixDoesNotStartTrip(mode: String) async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin, #"{"mode":"\#(mode)","zero":true}"#)
            let accept = try await live.post("/api/v1/bookings/b-1/accept", apiKey: setup.apiKey, json: "{}")
            #expect(accept.status == 201, "\(accept.body)")
            let zero = #"{"latitude":0,"longitude":0,"timestamp":"\#(Self.time(20).iso8601)","booking_id":"b-1"}"#
            let filtered = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: zero)
            #expect(try filtered.object()["filtered"] as? Int == 1, "\(filtered.body)")
            let waiting = try await live.get("/api/v1/tracking/b-1", apiKey: setup.apiKey).object()
            #expect(waiting["status"] as? String == "accepted", "\(waiting)")
            #expect(waiting["point_count"] as? Int == 0)
            let good = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: Self.fix(10, extra: #","booking_id":"b-1""#))
            #expect(try good.object()["accepted"] as? Int == 1, "\(good.body)")
            let started = try await live.get("/api/v1/tracking/b-1", apiKey: setup.apiKey).object()
            #expect(started["status"] as? String == "in_progress", "\(started)")
            #expect(started["point_count"] as? Int == 1)
        }
    }

    @Test("skip limit: a parked device's jitter is filtered, but after the limit one fix is accepted so the marker stays fresh")
    func skipLimit() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            try await Self.settings(live, admin, #"{"jitter_metres":20,"skip_limit_seconds":60}"#)
            let batch = "[" + [Self.fix(300), Self.fix(280, north: 5), Self.fix(250, north: 3), Self.fix(200, north: 4),
                               Self.fix(190, north: 6)].joined(separator: ",") + "]"
            let reply = try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: batch)
            #expect(try reply.object()["accepted"] as? Int == 2, "\(reply.body)")
            #expect(try await Self.reasons(live, device: setup.device.id) == [nil, "jitter", "jitter", nil, "jitter"])
            #expect(Self.close(try await Self.marker(live, device: setup.device.id), Self.time(200)))
            let shown = try await live.get("/api/v1/settings/filters", bearer: admin.accessToken).object()
            #expect(shown["skip_limit_seconds"] as? Double == 60)
        }
    }
}
