import Foundation
import NIOCore
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Times through every ingest path, read back from PostgreSQL: milliseconds stored exactly as
/// written, Traccar 4.x offsets without a colon, and one history window for fixes and events.
@Suite("Device protocols: times", .timeLimit(.minutes(3)))
struct DeviceProtocolTimeTests {
    typealias Fleet = DeviceProtocolIngestTests.Fleet

    /// The whole second `second` with `millis` milliseconds, as ISO-8601 with `zone`.
    static func text(_ second: Date, millis: Int, zone: String = "Z") -> String {
        String(second.formatted(Date.ISO8601FormatStyle()).dropLast()) + "." + String(format: "%03d", millis) + zone
    }

    /// How PostgreSQL shows a stored time to the microsecond, in UTC: `2026-03-01T13:40:12.318000`.
    static func shown(_ second: Date, millis: Int) -> String {
        String(second.formatted(Date.ISO8601FormatStyle()).dropLast()) + "." + String(format: "%03d", millis) + "000"
    }

    static func times(_ live: LiveNode, _ sql: PostgresQuery) async throws -> [String] {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            var texts: [String] = []
            for try await text in try await connection.query(sql, logger: TestCluster.logger).decode(String.self) { texts.append(text) }
            return texts
        }
    }

    @Test("every ingest path stores .318 and .999 exactly: REST, batch, producer events, Traccar, OsmAnd, Traccar Client, OwnTracks, Traccar events")
    func millisecondsExact() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let key = fleet.deviceKey, unique = "356938035643809"
            let base = DeviceProtocolIngestTests.recent(240)
            // Each path posts .318 at an even second and .999 at the odd one after it.
            func second(_ path: Int, _ millis: Int) -> Date { base.addingTimeInterval(Double(path * 2 + (millis == 318 ? 0 : 1))) }
            let stream = try await live.stream("/api/v1/stream", apiKey: key)
            _ = try await stream.opening()

            // Traccar events first, so that the stream's next events are theirs.
            var pushed: [String] = []
            for millis in [318, 999] {
                let event = #"{"event":{"type":"alarm","eventTime":"\#(Self.text(second(0, millis), millis: millis, zone: "+00:00"))"},"#
                    + #""device":{"uniqueId":"\#(unique)"}}"#
                let reply = try await live.post("/api/v1/ingest/traccar/events", apiKey: fleet.ingestKey, json: event)
                #expect(reply.status == 200, "Traccar event: \(reply.body)")
                pushed.append(try await stream.next("the event").object()["event_time"] as? String ?? "")
            }
            let eventTimes = try await Self.times(live, """
                SELECT to_char(event_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') FROM device_events ORDER BY event_time
                """)
            #expect(eventTimes == [Self.shown(second(0, 318), millis: 318), Self.shown(second(0, 999), millis: 999)])
            #expect(pushed == [Self.text(second(0, 318), millis: 318), Self.text(second(0, 999), millis: 999)], "device_event event_time")

            var expected: [(path: String, shown: String)] = []
            func fix(_ path: Int, _ millis: Int, zone: String = "Z") -> (text: String, epoch: String) {
                let date = second(path, millis)
                return (Self.text(date, millis: millis, zone: zone), "\(Int(date.timeIntervalSince1970)).\(millis)")
            }
            let paths = ["POST /api/v1/locations", "POST /api/v1/locations batch", "POST /api/v1/events", "Traccar forward",
                         "Traccar array", "OsmAnd query", "OsmAnd form", "Traccar Client JSON", "OwnTracks"]
            for (index, path) in paths.enumerated() {
                let number = index + 1
                let (a, b) = (fix(number, 318), fix(number, 999))
                let (traccarA, traccarB) = (fix(number, 318, zone: "+00:00").text, fix(number, 999, zone: "+00:00").text)
                var replies: [LiveNode.Reply] = []
                switch path {
                case "POST /api/v1/locations":
                    for time in [a, b] {
                        replies.append(try await live.post("/api/v1/locations", apiKey: key,
                                                           json: #"{"latitude":52.5,"longitude":13.4,"timestamp":"\#(time.text)"}"#))
                    }
                case "POST /api/v1/locations batch":
                    replies.append(try await live.post("/api/v1/locations", apiKey: key, json: """
                        [{"latitude":52.5,"longitude":13.4,"timestamp":"\(a.text)"},{"latitude":52.5,"longitude":13.4,"timestamp":"\(b.text)"}]
                        """))
                case "POST /api/v1/events":
                    replies.append(try await live.post("/api/v1/events", apiKey: key, json: """
                        [{"event_type":"runner.location_update","latitude":52.5,"longitude":13.4,"timestamp":"\(a.text)"},
                         {"event_type":"runner.location_update","latitude":52.5,"longitude":13.4,"timestamp":"\(b.text)"}]
                        """))
                case "Traccar forward":
                    for time in [traccarA, traccarB] {
                        replies.append(try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey, json: """
                            {"position":{"deviceId":12,"fixTime":"\(time)","latitude":52.5,"longitude":13.4},"device":{"uniqueId":"\(unique)"}}
                            """))
                    }
                case "Traccar array":
                    replies.append(try await live.post("/api/v1/ingest/traccar", apiKey: key, json: """
                        [{"deviceId":12,"fixTime":"\(traccarA)","latitude":52.5,"longitude":13.4},
                         {"deviceId":12,"fixTime":"\(traccarB)","latitude":52.5,"longitude":13.4}]
                        """))
                case "OsmAnd query":
                    for time in [a, b] {
                        replies.append(try await live.get("/api/v1/ingest/osmand?id=\(unique)&lat=52.5&lon=13.4&timestamp=\(time.text)&key=\(key)"))
                    }
                case "OsmAnd form":
                    for time in [a, b] {
                        replies.append(try await live.request(.POST, "/api/v1/ingest/osmand", apiKey: key,
                                                              body: ByteBuffer(string: "id=\(unique)&lat=52.5&lon=13.4&timestamp=\(time.text)")))
                    }
                case "Traccar Client JSON":
                    replies.append(try await live.request(.POST, "/api/v1/ingest/osmand?key=\(key)", body: ByteBuffer(string: """
                        {"device_id":"\(unique)","location":[{"timestamp":"\(a.text)","coords":{"latitude":52.5,"longitude":13.4}},
                                                             {"timestamp":"\(b.text)","coords":{"latitude":52.5,"longitude":13.4}}]}
                        """)))
                default:
                    // OwnTracks writes whole unix seconds; a fractional tst is kept as exactly.
                    for time in [a, b] {
                        replies.append(try await live.request(.POST, "/api/v1/ingest/owntracks", apiKey: key, body: ByteBuffer(string: """
                            {"_type":"location","lat":52.5,"lon":13.4,"tst":\(time.epoch)}
                            """)))
                    }
                }
                for reply in replies { #expect(reply.status / 100 == 2, "\(path): \(reply.status) \(reply.body)") }
                expected.append((path, Self.shown(second(number, 318), millis: 318)))
                expected.append((path, Self.shown(second(number, 999), millis: 999)))
            }
            let stored = try await Self.times(live, """
                SELECT to_char(fix_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') FROM positions
                 WHERE device_id = \(fleet.device.id) ORDER BY fix_time, id
                """)
            let missing = expected.filter { !stored.contains($0.shown) }.map { "\($0.path) \($0.shown)" }
            #expect(missing.isEmpty, "not stored exactly: \(missing); stored: \(stored)")
            #expect(stored.count == expected.count)
        }
    }

    @Test("Traccar 4.x offsets without a colon (+0000, -0530) are accepted as the instants they name")
    func offsetsWithoutColon() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let base = DeviceProtocolIngestTests.recent(60)
            // -0530: the wall clock five and a half hours behind UTC.
            let local = Self.text(base.addingTimeInterval(1 - 19_800), millis: 500, zone: "-0530")
            let body = """
                [{"deviceId":12,"fixTime":"\(Self.text(base, millis: 250, zone: "+0000"))","latitude":52.5,"longitude":13.4},
                 {"deviceId":12,"fixTime":"\(local)","latitude":52.6,"longitude":13.5}]
                """
            let reply = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.deviceKey, json: body)
            #expect(reply.status == 200, "\(reply.body)")
            let stored = try await Self.times(live, """
                SELECT to_char(fix_time AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US') FROM positions ORDER BY fix_time
                """)
            #expect(stored == [Self.shown(base, millis: 250), Self.shown(base.addingTimeInterval(1), millis: 500)])
        }
    }

    @Test("a Traccar event older than the history window is refused like a position that old; one inside it is stored")
    func eventHistoryWindow() async throws {
        try await LiveNode.run { live in
            let fleet = try await Fleet.create(live)
            let old = Self.text(DeviceProtocolIngestTests.recent(31 * 86_400), millis: 0, zone: "+00:00")
            let position = try await live.post("/api/v1/ingest/traccar", apiKey: fleet.ingestKey, json: """
                {"position":{"fixTime":"\(old)","latitude":52.5,"longitude":13.4},"device":{"uniqueId":"356938035643809"}}
                """)
            let event = try await live.post("/api/v1/ingest/traccar/events", apiKey: fleet.ingestKey, json: """
                {"event":{"type":"alarm","eventTime":"\(old)"},"device":{"uniqueId":"356938035643809"}}
                """)
            #expect(position.status == 422, "\(position.body)")
            #expect(event.status == position.status, "\(event.body)")
            let positionError = try position.error(), eventError = try event.error()
            #expect(eventError["code"] as? String == positionError["code"] as? String)
            #expect(positionError["field"] as? String == "position.fixTime")
            #expect(eventError["field"] as? String == "event.eventTime")
            // The same sentence after the field's own name.
            let positionMessage = positionError["message"] as? String ?? "", eventMessage = eventError["message"] as? String ?? ""
            #expect(positionMessage.hasPrefix("position.fixTime: is older than"), "\(positionMessage)")
            #expect(eventMessage == "event.eventTime" + positionMessage.dropFirst("position.fixTime".count), "\(eventMessage)")
            #expect(try await DeviceProtocolIngestTests.count(live, "SELECT count(*)::int FROM device_events") == 0)

            let inside = Self.text(DeviceProtocolIngestTests.recent(29 * 86_400), millis: 0, zone: "+00:00")
            let kept = try await live.post("/api/v1/ingest/traccar/events", apiKey: fleet.ingestKey, json: """
                {"event":{"type":"alarm","eventTime":"\(inside)"},"device":{"uniqueId":"356938035643809"}}
                """)
            #expect(kept.status == 200, "\(kept.body)")
            #expect(try await DeviceProtocolIngestTests.count(live, "SELECT count(*)::int FROM device_events") == 1)
        }
    }
}
