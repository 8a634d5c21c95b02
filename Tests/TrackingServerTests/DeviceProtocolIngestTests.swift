import Foundation
import NIOCore
import NIOHTTP1
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Device protocols end to end: payloads shaped as Traccar, Traccar Client (OsmAnd) and
/// OwnTracks send them, stored values read back from the database, pushes read from a stream.
@Suite("Device protocols: Traccar, OsmAnd, OwnTracks", .timeLimit(.minutes(3)))
struct DeviceProtocolIngestTests {
    /// A tenant with a device named `356938035643809` on the wire, its key, and an ingest key.
    struct Fleet: Sendable {
        let tenant: TenantID
        let device: DeviceIdentity
        let deviceKey: String
        let ingestKey: String
        let other: DeviceIdentity
        let otherKey: String

        static func create(_ live: LiveNode) async throws -> Fleet {
            let tenant = TenantID("fleet")!
            try await live.repository.createTenant(id: tenant, name: "Fleet")
            let (device, key) = try await live.repository.createDevice(tenant: tenant, name: "van-7", group: "default", grade: 0,
                                                                       uniqueID: DeviceUniqueID("356938035643809"))
            let (other, otherKey) = try await live.repository.createDevice(tenant: tenant, name: "phone", group: "default", grade: 0,
                                                                           uniqueID: DeviceUniqueID("jane"))
            let ingest = try #require(try await live.repository.createIngestKey(tenant: tenant, name: "traccar"))
            return Fleet(tenant: tenant, device: device, deviceKey: key, ingestKey: ingest.apiKey, other: other, otherKey: otherKey)
        }
    }

    struct StoredFix: Sendable {
        let latitude: Double
        let longitude: Double
        let fixTime: Date
        let speed: Double?
        let heading: Double?
        let altitude: Double?
        let accuracy: Double?
        let battery: Double?
        let attributes: String
    }

    static func stored(_ live: LiveNode, device: UUID) async throws -> [StoredFix] {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            let rows = try await connection.query("""
                SELECT ST_Y(location::geometry), ST_X(location::geometry), fix_time, speed, heading, altitude, accuracy, battery,
                       attributes::text
                  FROM positions WHERE device_id = \(device) ORDER BY fix_time, id
                """, logger: TestCluster.logger)
            var fixes: [StoredFix] = []
            for try await (lat, lon, time, speed, heading, altitude, accuracy, battery, attributes)
                in rows.decode((Double, Double, Date, Double?, Double?, Double?, Double?, Double?, String).self) {
                fixes.append(StoredFix(latitude: lat, longitude: lon, fixTime: time, speed: speed, heading: heading, altitude: altitude,
                                       accuracy: accuracy, battery: battery, attributes: attributes))
            }
            return fixes
        }
    }

    static func count(_ live: LiveNode, _ sql: PostgresQuery) async throws -> Int {
        try await TestDatabase.withConnection(live.databaseURL) { connection in try await Fixes.count(sql, on: connection) }
    }

    /// Whole seconds, some minutes ago: what the protocols' second-resolution times can name.
    static func recent(_ secondsAgo: Double = 120) -> Date {
        Date(timeIntervalSince1970: (Date().timeIntervalSince1970 - secondsAgo).rounded(.down))
    }

    static func traccarTime(_ date: Date) -> String {
        // Traccar writes ISO-8601 with milliseconds and a numeric offset.
        let text = date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true))
        return text.replacingOccurrences(of: "Z", with: "+00:00")
    }

    @Test("Traccar JSON forward with an ingest key: stored under the named device, knots to m/s, pushed")
    func traccarForward() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let stream = try await live.stream("/api/v1/stream", apiKey: fleet.deviceKey)
            _ = try await stream.opening()
            let time = Self.recent()
            let body = """
                {"position":{"id":987,"attributes":{"batteryLevel":76.0,"ignition":true,"motion":true},"deviceId":12,
                  "protocol":"teltonika","serverTime":"\(Self.traccarTime(time))","deviceTime":"\(Self.traccarTime(time))",
                  "fixTime":"\(Self.traccarTime(time))","outdated":false,"valid":true,"latitude":52.52,"longitude":13.405,
                  "altitude":34.0,"speed":10.0,"course":271.0,"address":null,"accuracy":5.0,"network":null},
                 "device":{"id":12,"attributes":{},"groupId":0,"name":"Van 7","uniqueId":"356938035643809","status":"online",
                           "lastUpdate":"\(Self.traccarTime(time))","positionId":987}}
                """
            let reply = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey, json: body)
            #expect(reply.status == 200, "\(reply.body)")
            #expect(try reply.object()["accepted"] as? Int == 1)

            let fixes = try await Self.stored(live, device: fleet.device.id)
            let fix = try #require(fixes.first)
            #expect(fixes.count == 1)
            #expect(fix.latitude == 52.52 && fix.longitude == 13.405)
            #expect(fix.fixTime == time)
            #expect(abs((fix.speed ?? 0) - 10 * 1_852 / 3_600) < 1e-9)
            #expect(fix.heading == 271 && fix.altitude == 34 && fix.accuracy == 5 && fix.battery == 76)
            #expect(fix.attributes.contains(#""ignition": true"#))
            #expect(try await Self.count(live, "SELECT count(*)::int FROM positions WHERE device_id = \(fleet.other.id)") == 0)

            let update = try await stream.next("the forwarded fix")
            #expect(update.event == "location_update")
            let data = try update.object()
            #expect(data["device_id"] as? String == fleet.device.id.uuidString.lowercased())
            #expect(data["latitude"] as? Double == 52.52)
            #expect(data["latest"] as? Bool == true)
        }
    }

    @Test("Traccar array with a device key: its own unique id is stored, another device's is 403 and nothing is written")
    func traccarDeviceKey() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let t1 = Self.recent(100), t2 = Self.recent(90)
            let own = """
                [{"deviceId":1,"fixTime":"\(Self.traccarTime(t1))","latitude":52.1,"longitude":13.1,"speed":0,"course":0,"valid":true,
                  "attributes":{"uniqueId":"356938035643809"}},
                 {"deviceId":1,"fixTime":"\(Self.traccarTime(t2))","latitude":52.2,"longitude":13.2,"speed":1,"course":360,"valid":true,
                  "attributes":{"uniqueId":"356938035643809"}}]
                """
            let reply = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.deviceKey, json: own)
            #expect(reply.status == 200, "\(reply.body)")
            #expect(try reply.object()["accepted"] as? Int == 2)
            let fixes = try await Self.stored(live, device: fleet.device.id)
            #expect(fixes.map(\.fixTime) == [t1, t2])
            #expect(fixes.last?.heading == 0, "course 360 is north")

            let foreign = """
                [{"fixTime":"\(Self.traccarTime(Self.recent(80)))","latitude":52.3,"longitude":13.3,"attributes":{"uniqueId":"356938035643809"}},
                 {"fixTime":"\(Self.traccarTime(Self.recent(70)))","latitude":52.4,"longitude":13.4,"attributes":{"uniqueId":"jane"}}]
                """
            let refused = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.deviceKey, json: foreign)
            #expect(refused.status == 403)
            #expect(try refused.error()["message"] as? String ?? "" != "")
            #expect(try await Self.count(live, "SELECT count(*)::int FROM positions") == 2, "nothing of the refused batch was written")
        }
    }

    @Test("a device key's Traccar batch naming another Traccar deviceId is 422 naming the entry, and nothing is written")
    func traccarDeviceKeyMixedDevices() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            // Traccar's own ids (deviceId) without unique ids: all would have gone to the key's device.
            let mixed = """
                [{"deviceId":1,"fixTime":"\(Self.traccarTime(Self.recent(100)))","latitude":52.1,"longitude":13.1},
                 {"deviceId":1,"fixTime":"\(Self.traccarTime(Self.recent(90)))","latitude":52.2,"longitude":13.2},
                 {"fixTime":"\(Self.traccarTime(Self.recent(85)))","latitude":52.25,"longitude":13.25},
                 {"deviceId":2,"fixTime":"\(Self.traccarTime(Self.recent(80)))","latitude":52.3,"longitude":13.3}]
                """
            let refused = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.deviceKey, json: mixed)
            #expect(refused.status == 422, "\(refused.body)")
            let error = try refused.error()
            #expect(error["field"] as? String == "[3].deviceId")
            #expect(error["index"] as? Int == 3)
            let message = error["message"] as? String ?? ""
            #expect(message.hasPrefix("[3].deviceId: 2 belongs to a different device than the key"), "\(message)")
            #expect(try await Self.count(live, "SELECT count(*)::int FROM positions") == 0, "nothing of the refused batch was written")

            // With the tenant's ingest key each entry names its device by unique id and goes to it.
            let routed = """
                [{"deviceId":1,"fixTime":"\(Self.traccarTime(Self.recent(70)))","latitude":52.4,"longitude":13.4,
                  "attributes":{"uniqueId":"356938035643809"}},
                 {"deviceId":2,"fixTime":"\(Self.traccarTime(Self.recent(60)))","latitude":52.5,"longitude":13.5,
                  "attributes":{"uniqueId":"jane"}}]
                """
            let reply = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey, json: routed)
            #expect(reply.status == 200, "\(reply.body)")
            let own = try await Self.stored(live, device: fleet.device.id).map(\.latitude)
            let other = try await Self.stored(live, device: fleet.other.id).map(\.latitude)
            #expect(own == [52.4] && other == [52.5], "own \(own), other \(other)")
        }
    }

    @Test("unknown unique ids are 404, bad keys 401, and nothing is stored")
    func unknownDevice() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let body = #"{"position":{"fixTime":"\#(Self.traccarTime(Self.recent()))","latitude":1,"longitude":2},"device":{"uniqueId":"999"}}"#
            let unknown = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey, json: body)
            #expect(unknown.status == 404)
            #expect((try unknown.error()["message"] as? String)?.contains("'999'") == true)
            let noID = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey,
                                           json: #"{"fixTime":"\#(Self.traccarTime(Self.recent()))","latitude":1,"longitude":2}"#)
            #expect(noID.status == 422, "an ingest key needs the unique id: \(noID.body)")
            let badKey = try await live.post("/api/v1/ingest/traccar", apiKey: "pgi_" + String(repeating: "0", count: 64), json: body)
            #expect(badKey.status == 401)
            let osmand = try await live.get("/api/v1/ingest/osmand?id=nobody&lat=1&lon=2&key=\(fleet.ingestKey)")
            #expect(osmand.status == 404)
            let anonymous = try await live.get("/api/v1/ingest/osmand?id=jane&lat=1&lon=2")
            #expect(anonymous.status == 401)
            #expect(try await Self.count(live, "SELECT count(*)::int FROM positions") == 0)
        }
    }

    @Test("Traccar event forward is stored and pushed as device_event")
    func traccarEvents() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let stream = try await live.stream("/api/v1/stream", apiKey: fleet.deviceKey)
            _ = try await stream.opening()
            let time = Self.recent(30)
            let body = """
                {"event":{"id":5,"attributes":{"alarm":"sos"},"deviceId":12,"type":"alarm","eventTime":"\(Self.traccarTime(time))",
                          "positionId":987,"geofenceId":0,"maintenanceId":0},
                 "position":{"id":987,"latitude":52.5,"longitude":13.4,"fixTime":"\(Self.traccarTime(time))","speed":0,"attributes":{}},
                 "device":{"id":12,"name":"Van 7","uniqueId":"356938035643809","status":"online"}}
                """
            let reply = try await live.post("/api/v1/ingest/traccar/events", apiKey: fleet.ingestKey, json: body)
            #expect(reply.status == 200, "\(reply.body)")
            #expect(try await Self.count(live, """
                SELECT count(*)::int FROM device_events
                 WHERE device_id = \(fleet.device.id) AND type = 'alarm' AND event_time = \(time) AND attributes->>'alarm' = 'sos'
                """) == 1)
            let event = try await stream.next("the alarm")
            #expect(event.event == "device_event")
            let data = try event.object()
            #expect(data["event_type"] as? String == "alarm")
            #expect(data["device_id"] as? String == fleet.device.id.uuidString.lowercased())
            #expect((data["attributes"] as? [String: Any])?["alarm"] as? String == "sos")

            let missingType = try await live.post("/api/v1/ingest/traccar/events", apiKey: fleet.ingestKey,
                                                  json: #"{"event":{"eventTime":"2026-01-01T00:00:00Z"},"device":{"uniqueId":"jane"}}"#)
            #expect(missingType.status == 422)
            #expect(try await Self.count(live, "SELECT count(*)::int FROM device_events") == 1)
        }
    }

    @Test("OsmAnd query as Traccar Client sends it: key in the query, knots, unix seconds, attributes kept")
    func osmAndQuery() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let stream = try await live.stream("/api/v1/stream", apiKey: fleet.otherKey)
            _ = try await stream.opening()
            let t1 = Self.recent(60)
            let query = "id=jane&timestamp=\(Int(t1.timeIntervalSince1970))&lat=48.137154&lon=11.576124&speed=12.3"
                + "&bearing=45.5&altitude=519.0&accuracy=9.6&batt=71.0&charge=false&key=\(fleet.otherKey)"
            let get = try await live.get("/api/v1/ingest/osmand?" + query)
            #expect(get.status == 200, "\(get.body)")
            // POST with the parameters in the URL and an empty body (older Traccar Client).
            let t2 = Self.recent(50)
            let post = try await live.request(.POST, "/api/v1/ingest/osmand?id=jane&timestamp=\(Int(t2.timeIntervalSince1970) * 1000)"
                                                  + "&lat=48.2&lon=11.6&api_key=\(fleet.otherKey)")
            #expect(post.status == 200, "\(post.body)")
            // yyyy-MM-dd HH:mm:ss and location=lat,lon, credentials in X-API-Key.
            let t3 = Self.recent(40)
            let formatter = DateFormatter()
            formatter.locale = Locale(identifier: "en_US_POSIX")
            formatter.timeZone = TimeZone(identifier: "UTC")
            formatter.dateFormat = "yyyy-MM-dd'%20'HH:mm:ss"
            let spaced = try await live.get("/api/v1/ingest/osmand?id=jane&location=48.3,11.7&timestamp=\(formatter.string(from: t3))",
                                            apiKey: fleet.otherKey)
            #expect(spaced.status == 200, "\(spaced.body)")

            let fixes = try await Self.stored(live, device: fleet.other.id)
            #expect(fixes.map(\.fixTime) == [t1, t2, t3])
            let first = try #require(fixes.first)
            #expect(first.latitude == 48.137154 && first.longitude == 11.576124)
            #expect(abs((first.speed ?? 0) - 12.3 * 1_852 / 3_600) < 1e-9)
            #expect(first.heading == 45.5 && first.altitude == 519 && first.accuracy == 9.6 && first.battery == 71)
            #expect(first.attributes.contains(#""charge": false"#))
            #expect(!first.attributes.contains("key"), "the credential is not an attribute: \(first.attributes)")
            #expect(fixes[2].latitude == 48.3 && fixes[2].longitude == 11.7)

            let events = try await stream.collect(3)
            #expect(events.map(\.event) == ["location_update", "location_update", "location_update"])
            #expect(try events[0].object()["latitude"] as? Double == 48.137154)
        }
    }

    @Test("Traccar Client JSON body: m/s, battery 0–1, -1 unknown; a wrong id with a device key is 403")
    func osmAndJSON() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let time = Self.recent(20)
            let body = """
                {"location":{"timestamp":"\(time.iso8601)","coords":{"latitude":48.1,"longitude":11.5,"accuracy":7.5,"speed":3.5,
                  "heading":-1,"altitude":520},"is_moving":true,"odometer":1500,"event":"motionchange",
                  "battery":{"level":0.42,"is_charging":true},"activity":{"type":"walking"},"extras":{}},"device_id":"jane"}
                """
            let reply = try await live.request(.POST, "/api/v1/ingest/osmand?key=\(fleet.otherKey)", body: ByteBuffer(string: body))
            #expect(reply.status == 200, "\(reply.body)")
            let fix = try #require(try await Self.stored(live, device: fleet.other.id).first)
            #expect(fix.speed == 3.5, "JSON speed is already m/s")
            #expect(fix.heading == nil && fix.battery == 42 && fix.accuracy == 7.5)
            #expect(fix.attributes.contains(#""activity": "walking""#) && fix.attributes.contains(#""motion": true"#))

            let wrong = try await live.request(.POST, "/api/v1/ingest/osmand?key=\(fleet.otherKey)",
                                               body: ByteBuffer(string: body.replacingOccurrences(of: #""jane""#, with: #""356938035643809""#)))
            #expect(wrong.status == 403)
            #expect(try await Self.count(live, "SELECT count(*)::int FROM positions") == 1)
        }
    }

    @Test("malformed OsmAnd and Traccar values are 4xx with an actionable message and write nothing")
    func malformed() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let badLat = try await live.get("/api/v1/ingest/osmand?id=jane&lat=abc&lon=11&key=\(fleet.otherKey)")
            #expect(badLat.status == 422)
            #expect(try badLat.error()["field"] as? String == "lat")
            #expect((try badLat.error()["message"] as? String)?.contains("must be a number") == true)
            let badTime = try await live.get("/api/v1/ingest/osmand?id=jane&lat=1&lon=11&timestamp=soon&key=\(fleet.otherKey)")
            #expect(badTime.status == 422)
            #expect(try badTime.error()["field"] as? String == "timestamp")
            let range = try await live.get("/api/v1/ingest/osmand?id=jane&lat=1&lon=181&key=\(fleet.otherKey)")
            #expect(range.status == 422)
            #expect((try range.error()["message"] as? String)?.hasPrefix("lon: must be between -180 and 180") == true)
            let notJSON = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey, json: "{nope")
            #expect(notJSON.status == 400)
            let secondBad = """
                [{"fixTime":"\(Self.traccarTime(Self.recent(10)))","latitude":1,"longitude":2,"attributes":{"uniqueId":"jane"}},
                 {"fixTime":"\(Self.traccarTime(Self.recent(5)))","latitude":1,"longitude":2,"speed":-3,"attributes":{"uniqueId":"jane"}}]
                """
            let batch = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey, json: secondBad)
            #expect(batch.status == 422)
            #expect(try batch.error()["index"] as? Int == 1)
            #expect(try batch.error()["field"] as? String == "[1].speed")
            #expect(try await Self.count(live, "SELECT count(*)::int FROM positions") == 0)
        }
    }

    @Test("OwnTracks HTTP: Basic auth with the device key, km/h, answers [] and ignores other message types")
    func ownTracks() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let stream = try await live.stream("/api/v1/stream", apiKey: fleet.otherKey)
            _ = try await stream.opening()
            let time = Self.recent(15)
            let basic = "Basic " + Data("jane:\(fleet.otherKey)".utf8).base64EncodedString()
            let headers = [("Authorization", basic), ("X-Limit-U", "jane"), ("X-Limit-D", "phone")]
            let location = """
                {"_type":"location","acc":12,"alt":510,"batt":64,"bs":1,"cog":90,"conn":"w","created_at":\(Int(time.timeIntervalSince1970)),
                 "lat":48.1351,"lon":11.582,"m":1,"tid":"jn","tst":\(Int(time.timeIntervalSince1970)),"vac":3,"vel":54,
                 "topic":"owntracks/jane/phone"}
                """
            let reply = try await live.request(.POST, "/api/v1/ingest/owntracks", body: ByteBuffer(string: location), headers: headers)
            #expect(reply.status == 200)
            #expect(reply.body == "[]")
            let fix = try #require(try await Self.stored(live, device: fleet.other.id).first)
            #expect(fix.fixTime == time)
            #expect(fix.speed == 15, "54 km/h is 15 m/s")
            #expect(fix.heading == 90 && fix.accuracy == 12 && fix.altitude == 510 && fix.battery == 64)
            #expect(fix.attributes.contains(#""tid": "jn""#))
            let update = try await stream.next("the OwnTracks fix")
            #expect(try update.object()["latitude"] as? Double == 48.1351)

            let transition = try await live.request(.POST, "/api/v1/ingest/owntracks",
                                                    body: ByteBuffer(string: #"{"_type":"transition","event":"enter","tst":1}"#),
                                                    headers: headers)
            #expect(transition.status == 200 && transition.body == "[]")
            let wrongUser = try await live.request(
                .POST, "/api/v1/ingest/owntracks", body: ByteBuffer(string: location),
                headers: [("Authorization", "Basic " + Data("bob:\(fleet.otherKey)".utf8).base64EncodedString())])
            #expect(wrongUser.status == 403)
            // X-API-Key without a user: the key's own device.
            let keyOnly = try await live.request(.POST, "/api/v1/ingest/owntracks",
                                                 body: ByteBuffer(string: location.replacingOccurrences(of: "48.1351", with: "48.2")),
                                                 headers: [("X-API-Key", fleet.otherKey)])
            #expect(keyOnly.status == 200)
            #expect(try await Self.count(live, "SELECT count(*)::int FROM positions WHERE device_id = \(fleet.other.id)") == 2)
        }
    }

    @Test("unique ids are set at creation and by PATCH, unique per tenant")
    func uniqueIDAdministration() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let admin = try await live.user(.admin, in: fleet.tenant)
            let created = try await live.post("/api/v1/devices", bearer: admin.accessToken, json: #"{"name":"truck","unique_id":"T-100"}"#)
            #expect(created.status == 201, "\(created.body)")
            let device = try #require((try created.object()["device"] as? [String: Any]))
            #expect(device["unique_id"] as? String == "T-100")
            let id = try #require(device["device_id"] as? String)
            let clash = try await live.request(.PATCH, "/api/v1/devices/\(id)", bearer: admin.accessToken,
                                               body: ByteBuffer(string: #"{"unique_id":"jane"}"#))
            #expect(clash.status == 409)
            let renamed = try await live.request(.PATCH, "/api/v1/devices/\(id)", bearer: admin.accessToken,
                                                 body: ByteBuffer(string: #"{"unique_id":"T-200"}"#))
            #expect(renamed.status == 200)
            #expect(try renamed.object()["unique_id"] as? String == "T-200")
            let bad = try await live.request(.PATCH, "/api/v1/devices/\(id)", bearer: admin.accessToken,
                                             body: ByteBuffer(string: #"{"unique_id":"has space"}"#))
            #expect(bad.status == 422)
            let duplicate = try await live.post("/api/v1/devices", bearer: admin.accessToken, json: #"{"name":"x","unique_id":"T-200"}"#)
            #expect(duplicate.status == 409)
        }
    }
}
