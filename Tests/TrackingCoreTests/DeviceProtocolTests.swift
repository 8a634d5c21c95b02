import Foundation
import Testing
import TrackingCore
import TrackingTestSupport

/// Payloads shaped as the real clients send them, decoded to validated positions.
@Suite("Device protocol decoders")
struct DeviceProtocolTests {
    let validator = PositionValidator()
    /// 2027-01-15T08:00:00Z.
    let now = Date(timeIntervalSince1970: 1_800_000_000)

    func bytes(_ text: String) -> [UInt8] { Array(text.utf8) }

    @Test("Traccar JSON forward: knots to m/s, course, batteryLevel, uniqueId from the device")
    func traccarForward() throws {
        let body = """
            {"position":{"id":987,"attributes":{"batteryLevel":76.0,"ignition":true,"distance":12.5},"deviceId":12,
              "protocol":"teltonika","serverTime":"2027-01-15T07:59:58.000+00:00","deviceTime":"2027-01-15T07:59:50.000+00:00",
              "fixTime":"2027-01-15T07:59:50.000+00:00","outdated":false,"valid":true,"latitude":52.52,"longitude":13.405,
              "altitude":34.0,"speed":10.0,"course":359.5,"address":null,"accuracy":5.0,"network":null},
             "device":{"id":12,"attributes":{},"groupId":0,"name":"Van 7","uniqueId":"356938035643809","status":"online"}}
            """
        let fixes = try TraccarProtocol.decodePositions(bytes(body), validator: validator, now: now)
        #expect(fixes.count == 1)
        let fix = try #require(fixes.first)
        #expect(fix.uniqueID?.rawValue == "356938035643809")
        #expect(fix.position.latitude == 52.52)
        #expect(abs((fix.position.speed ?? 0) - 5.14444) < 0.0001, "10 knots is 5.144 m/s")
        #expect(fix.position.heading == 359.5)
        #expect(fix.position.battery == 76)
        #expect(fix.position.accuracy == 5)
        #expect(fix.position.fixTime == now.addingTimeInterval(-10))
        #expect(fix.position.attributes["ignition"] == .bool(true))
        #expect(fix.position.attributes["valid"] == .bool(true))
        #expect(fix.position.attributes["traccar_device_id"] == .number(12))
        #expect(fix.position.attributes["batteryLevel"] == nil)
    }

    @Test("Traccar array of positions with uniqueId in attributes; valid:false kept for the filter")
    func traccarArray() throws {
        let body = """
            [{"deviceId":3,"fixTime":"2027-01-15T07:59:00Z","latitude":1.5,"longitude":2.5,"speed":0,"course":360,
              "valid":false,"accuracy":0,"attributes":{"uniqueId":"abc-1"}},
             {"deviceId":3,"fixTime":1799999950000,"latitude":1.6,"longitude":2.6,"attributes":{"uniqueId":"abc-1"}}]
            """
        let fixes = try TraccarProtocol.decodePositions(bytes(body), validator: validator, now: now)
        #expect(fixes.map(\.uniqueID?.rawValue) == ["abc-1", "abc-1"])
        #expect(fixes[0].position.heading == 0, "course 360 is north")
        #expect(fixes[0].position.accuracy == nil, "Traccar's 0 means unknown")
        #expect(fixes[0].position.attributes["valid"] == .bool(false))
        #expect(fixes[1].position.fixTime == now.addingTimeInterval(-50), "epoch milliseconds")
    }

    @Test("Traccar errors name the Traccar field and the element")
    func traccarErrors() throws {
        #expect(throws: APIError.self) { try TraccarProtocol.decodePositions(bytes("not json"), validator: validator, now: now) }
        do {
            _ = try TraccarProtocol.decodePositions(bytes(#"{"position":{"fixTime":"2027-01-15T07:59:00Z","latitude":91,"longitude":0},"device":{"uniqueId":"x"}}"#),
                                                    validator: validator, now: now)
            Issue.record("latitude 91 was accepted")
        } catch {
            #expect(error.status == 422)
            #expect(error.field == "position.latitude")
            #expect(error.message.hasPrefix("position.latitude: must be between -90 and 90"))
        }
        do {
            _ = try TraccarProtocol.decodePositions(bytes(#"[{"fixTime":"2027-01-15T07:59:00Z","latitude":"north","longitude":0}]"#),
                                                    validator: validator, now: now)
            Issue.record("a text latitude was accepted")
        } catch {
            #expect(error.status == 422)
            #expect(error.field == "[0].latitude")
        }
    }

    @Test("a Traccar batch naming two deviceIds is refused for a device key, naming the first entry that differs")
    func traccarMixedDeviceIDs() throws {
        let same = try TraccarProtocol.decodePositions(bytes("""
            [{"deviceId":7,"fixTime":"2027-01-15T07:59:00Z","latitude":1,"longitude":2},
             {"fixTime":"2027-01-15T07:59:01Z","latitude":1,"longitude":2},
             {"position":{"deviceId":"7","fixTime":"2027-01-15T07:59:02Z","latitude":1,"longitude":2},"device":{"id":7}}]
            """), validator: validator, now: now)
        try ProtocolFix.requireOneSourceDevice(same)
        let mixed = try TraccarProtocol.decodePositions(bytes("""
            [{"deviceId":7,"fixTime":"2027-01-15T07:59:00Z","latitude":1,"longitude":2},
             {"position":{"deviceId":8,"fixTime":"2027-01-15T07:59:02Z","latitude":1,"longitude":2},"device":{"id":8}}]
            """), validator: validator, now: now)
        do {
            try ProtocolFix.requireOneSourceDevice(mixed)
            Issue.record("deviceIds 7 and 8 passed as one device")
        } catch {
            #expect(error.status == 422)
            #expect(error.field == "[1].position.deviceId")
            #expect(error.index == 1)
            #expect(error.message.hasPrefix("[1].position.deviceId: 8 belongs to a different device than the key ([0].deviceId is 7)"),
                    "\(error.message)")
        }
    }

    @Test("Traccar event forward")
    func traccarEvent() throws {
        let body = """
            {"event":{"id":5,"attributes":{"alarm":"sos"},"deviceId":12,"type":"alarm",
                      "eventTime":"2027-01-15T07:59:55.000+00:00","positionId":987,"geofenceId":0,"maintenanceId":0},
             "position":{"latitude":52.5,"longitude":13.4},
             "device":{"id":12,"name":"Van 7","uniqueId":"356938035643809"}}
            """
        let event = try TraccarProtocol.decodeEvent(bytes(body), validator: validator, now: now)
        #expect(event.type == "alarm")
        #expect(event.uniqueID?.rawValue == "356938035643809")
        #expect(event.eventTime == now.addingTimeInterval(-5))
        #expect(event.attributes["alarm"] == .string("sos"))
        #expect(event.attributes["positionId"] == .number(987))
        #expect(event.position?["latitude"] == .number(52.5))
        #expect(throws: APIError.self) { try TraccarProtocol.decodeEvent(bytes(#"{"event":{"eventTime":1}}"#), validator: validator, now: now) }
    }

    @Test("a Traccar event's time is held to the fixes' window, with the same error as a fix that old", arguments: [
        -31 * 86_400.0, 3_600.0,
    ])
    func traccarEventWindow(offset: Double) throws {
        let time = now.addingTimeInterval(offset).formatted(Date.ISO8601FormatStyle())
        func error(_ body: String, _ decode: (String) throws(APIError) -> Void) -> APIError? {
            do { try decode(body); return nil } catch { return error }
        }
        let event = error(#"{"event":{"type":"alarm","eventTime":"\#(time)"},"device":{"uniqueId":"x"}}"#) { body throws(APIError) in
            _ = try TraccarProtocol.decodeEvent(bytes(body), validator: validator, now: now)
        }
        let fix = error(#"{"position":{"fixTime":"\#(time)","latitude":1,"longitude":2},"device":{"uniqueId":"x"}}"#) { body throws(APIError) in
            _ = try TraccarProtocol.decodePositions(bytes(body), validator: validator, now: now)
        }
        let eventError = try require(event, "an event at \(time) was accepted")
        let fixError = try require(fix, "a fix at \(time) was accepted")
        #expect(eventError.status == 422 && eventError.status == fixError.status && eventError.code == fixError.code)
        #expect(eventError.field == "event.eventTime")
        #expect(eventError.message == "event.eventTime" + fixError.message.dropFirst("position.fixTime".count), "\(eventError.message)")
        let inside = #"{"event":{"type":"alarm","eventTime":"\#(now.addingTimeInterval(-29 * 86_400).formatted(Date.ISO8601FormatStyle()))"}}"#
        #expect(try TraccarProtocol.decodeEvent(bytes(inside), validator: validator, now: now).type == "alarm")
    }

    @Test("OsmAnd query: knots, every timestamp form, location=lat,lon, unknown keys kept, credentials not")
    func osmAndQuery() throws {
        let forms = ["1799999990", "1799999990000", "2027-01-15T07:59:50Z", "2027-01-15 07:59:50", "2027-01-15T07:59:50.000+00:00"]
        for form in forms {
            let fix = try OsmAndProtocol.decodeQuery(
                [("id", "123456"), ("lat", "52.5"), ("lon", "13.4"), ("timestamp", form), ("speed", "20"), ("bearing", "90"),
                 ("altitude", "40"), ("accuracy", "12.5"), ("batt", "88"), ("charge", "true"), ("hdop", "0.9"), ("api_key", "secret")],
                validator: validator, now: now)
            #expect(fix.uniqueID?.rawValue == "123456")
            #expect(fix.position.fixTime == now.addingTimeInterval(-10), "timestamp form \(form)")
            #expect(abs((fix.position.speed ?? 0) - 10.2889) < 0.0001, "20 knots")
            #expect(fix.position.heading == 90)
            #expect(fix.position.battery == 88)
            #expect(fix.position.attributes["charge"] == .bool(true))
            #expect(fix.position.attributes["hdop"] == .number(0.9))
            #expect(fix.position.attributes["api_key"] == nil)
        }
        let located = try OsmAndProtocol.decodeQuery([("id", "x"), ("location", "52.1,13.2"), ("timestamp", "1799999990")],
                                                     validator: validator, now: now)
        #expect(located.position.latitude == 52.1 && located.position.longitude == 13.2)
    }

    @Test("OsmAnd query errors say which parameter and how to fix it")
    func osmAndErrors() throws {
        func error(_ parameters: [(String, String)]) -> APIError? {
            do { _ = try OsmAndProtocol.decodeQuery(parameters, validator: validator, now: now); return nil } catch { return error }
        }
        #expect(error([("lat", "1"), ("lon", "2")])?.field == "id")
        #expect(error([("id", "a"), ("lat", "abc"), ("lon", "2")])?.field == "lat")
        #expect(error([("id", "a"), ("lat", "1"), ("lon", "2"), ("timestamp", "yesterday")])?.field == "timestamp")
        #expect(error([("id", "a"), ("lat", "95"), ("lon", "2")])?.message.hasPrefix("lat: must be between -90 and 90") == true)
        #expect(error([("id", "a"), ("location", "52.1")])?.field == "location")
    }

    @Test("Traccar Client JSON: m/s, heading, battery level 0–1, -1 means unknown, extras kept")
    func osmAndJSON() throws {
        let body = """
            {"location":{"timestamp":"2027-01-15T07:59:50.123Z","coords":{"latitude":52.5,"longitude":13.4,"accuracy":8,
              "speed":-1,"heading":-1,"altitude":50},"is_moving":true,"odometer":1234.5,"event":"motionchange",
              "battery":{"level":0.85,"is_charging":false},"activity":{"type":"in_vehicle"},"extras":{"trip":"t1"}},
             "device_id":"phone-7"}
            """
        let fixes = try OsmAndProtocol.decodeJSON(bytes(body), validator: validator, now: now)
        let fix = try #require(fixes.first)
        #expect(fix.uniqueID?.rawValue == "phone-7")
        #expect(fix.position.speed == nil && fix.position.heading == nil)
        #expect(fix.position.battery == 85)
        #expect(fix.position.accuracy == 8)
        #expect(fix.position.attributes["motion"] == .bool(true))
        #expect(fix.position.attributes["charge"] == .bool(false))
        #expect(fix.position.attributes["activity"] == .string("in_vehicle"))
        #expect(fix.position.attributes["trip"] == .string("t1"))
        #expect(abs(fix.position.fixTime.timeIntervalSince(now.addingTimeInterval(-9.877))) < 0.001)
        do {
            _ = try OsmAndProtocol.decodeJSON(bytes(#"{"device_id":"p","location":{"timestamp":1,"coords":{"latitude":1}}}"#),
                                              validator: validator, now: now)
            Issue.record("a fix without longitude was accepted")
        } catch {
            #expect(error.field == "location.coords.longitude")
        }
    }

    @Test("OwnTracks location: km/h, tst, other types ignored")
    func ownTracks() throws {
        let body = #"{"_type":"location","acc":10,"alt":45,"batt":67,"bs":1,"cog":180,"conn":"m","lat":48.1,"lon":11.5,"tid":"jj","tst":1799999970,"vel":36,"topic":"owntracks/jane/phone"}"#
        let fix = try #require(try OwnTracksProtocol.decode(bytes(body), uniqueID: DeviceUniqueID("jane"), validator: validator, now: now))
        #expect(fix.uniqueID?.rawValue == "jane")
        #expect(fix.position.speed == 10, "36 km/h is 10 m/s")
        #expect(fix.position.heading == 180)
        #expect(fix.position.fixTime == now.addingTimeInterval(-30))
        #expect(fix.position.attributes["tid"] == .string("jj"))
        #expect(try OwnTracksProtocol.decode(bytes(#"{"_type":"transition","event":"enter"}"#), uniqueID: nil, validator: validator,
                                             now: now) == nil)
        #expect(throws: APIError.self) {
            try OwnTracksProtocol.decode(bytes(#"{"_type":"location","lat":1,"lon":2}"#), uniqueID: nil, validator: validator, now: now)
        }
    }

    @Test("protocol times", arguments: [
        ("1799999990", 1_799_999_990.0), ("1799999990500", 1_799_999_990.5), ("2027-01-15 07:59:50", 1_799_999_990.0),
        ("2027-01-15+07:59:50", 1_799_999_990.0), ("2027-01-15T07:59:50", 1_799_999_990.0), ("2027-01-15T09:59:50+02:00", 1_799_999_990.0),
        ("2027-01-15T07:59:50.000+0000", 1_799_999_990.0), ("2027-01-15T02:29:50-0530", 1_799_999_990.0),
        ("2027-01-15 07:59:50.318", 1_799_999_990.318),
    ])
    func times(text: String, epoch: Double) throws {
        let date = try #require(ProtocolTime.parse(text), "\(text)")
        #expect(abs(date.timeIntervalSince1970 - epoch) < 0.001)
    }

    /// Microseconds since 1970, rounded: what PostgreSQL's to_timestamp keeps of a Date.
    static func micros(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) }

    /// The milliseconds (0–999 after `now`) whose decoded time is not exactly the one written.
    func wrong(_ times: [Date]) -> [Int] {
        zip(0..<1_000, times).filter { Self.micros($0.1) != Self.micros(now) + Int64($0.0) * 1_000 }.map(\.0)
    }

    @Test("every millisecond of a second is decoded exactly by each protocol (no .318 read as .317, .999 as .998)")
    func everyMillisecond() throws {
        let millis = Array(0..<1_000)
        let later = now.addingTimeInterval(10)
        func text(_ ms: Int, zone: String = "Z") -> String { "2027-01-15T08:00:00." + String(format: "%03d", ms) + zone }

        let traccar = "[" + millis.map { #"{"deviceId":1,"fixTime":"\#(text($0, zone: "+00:00"))","latitude":1,"longitude":2}"# }
            .joined(separator: ",") + "]"
        let traccarWrong = wrong(try TraccarProtocol.decodePositions(bytes(traccar), validator: validator, now: later).map(\.position.fixTime))
        #expect(traccarWrong.isEmpty, "Traccar fixTime: \(traccarWrong.count) of 1000 ms decoded otherwise, e.g. \(traccarWrong.prefix(5))")

        let client = #"{"device_id":"p","location":["# + millis.map { #"{"timestamp":"\#(text($0))","coords":{"latitude":1,"longitude":2}}"# }
            .joined(separator: ",") + "]}"
        let clientWrong = wrong(try OsmAndProtocol.decodeJSON(bytes(client), validator: validator, now: later).map(\.position.fixTime))
        #expect(clientWrong.isEmpty, "Traccar Client JSON: \(clientWrong.count) of 1000 ms decoded otherwise, e.g. \(clientWrong.prefix(5))")

        var query: [Date] = []
        var ownTracks: [Date] = []
        var events: [Date] = []
        for ms in millis {
            query.append(try OsmAndProtocol.decodeQuery([("id", "p"), ("lat", "1"), ("lon", "2"), ("timestamp", text(ms))],
                                                        validator: validator, now: later).position.fixTime)
            let tst = "1800000000." + String(format: "%03d", ms)
            let message = #"{"_type":"location","lat":1,"lon":2,"tst":\#(tst)}"#
            if let fix = try OwnTracksProtocol.decode(bytes(message), uniqueID: nil, validator: validator, now: later) {
                ownTracks.append(fix.position.fixTime)
            }
            let event = #"{"event":{"type":"alarm","eventTime":"\#(text(ms, zone: "+00:00"))"},"device":{"uniqueId":"p"}}"#
            events.append(try TraccarProtocol.decodeEvent(bytes(event), validator: validator, now: later).eventTime)
        }
        let queryWrong = wrong(query), ownTracksWrong = wrong(ownTracks), eventsWrong = wrong(events)
        #expect(queryWrong.isEmpty, "OsmAnd timestamp: \(queryWrong.count) of 1000 ms decoded otherwise, e.g. \(queryWrong.prefix(5))")
        #expect(ownTracks.count == 1_000)
        #expect(ownTracksWrong.isEmpty, "OwnTracks tst: \(ownTracksWrong.count) of 1000 ms decoded otherwise, e.g. \(ownTracksWrong.prefix(5))")
        #expect(eventsWrong.isEmpty, "Traccar eventTime: \(eventsWrong.count) of 1000 ms decoded otherwise, e.g. \(eventsWrong.prefix(5))")
    }

    @Test("unique ids: printable ASCII without spaces")
    func uniqueIDs() {
        #expect(DeviceUniqueID("356938035643809") != nil)
        #expect(DeviceUniqueID("jane@example.com") != nil)
        #expect(DeviceUniqueID("") == nil)
        #expect(DeviceUniqueID("a b") == nil)
        #expect(DeviceUniqueID(String(repeating: "x", count: 101)) == nil)
    }
}
