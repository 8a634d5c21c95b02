import Foundation
import Testing
import TrackingCore

@Suite("Timestamp.parse")
struct TimestampParsingTests {
    /// 2027-01-15T08:00:00Z.
    let instant = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("Z, numeric offsets and fractional seconds name the same instant", arguments: [
        ("2027-01-15T08:00:00Z", 0.0),
        ("2027-01-15T10:00:00+02:00", 0.0),
        ("2027-01-15T03:00:00-05:00", 0.0),
        ("2027-01-15T08:00:00.250Z", 0.25),
        ("2027-01-15T09:30:00.5+01:30", 0.5),
        // Traccar 4.x (Jackson before 2.11) writes offsets without the colon.
        ("2027-01-15T08:00:00.000+0000", 0.0),
        ("2027-01-15T02:30:00-0530", 0.0),
        ("2027-01-15T13:30:00.250+0530", 0.25),
    ])
    func parses(text: String, fraction: Double) throws {
        let date = try #require(Timestamp.parse(text), "\(text) should parse")
        #expect(abs(date.timeIntervalSince(instant) - fraction) < 0.001, "\(text) parsed as \(date)")
    }

    @Test("text that is not an ISO-8601 date-time does not parse", arguments: [
        "", "yesterday", "2027-01-15", "08:00:00Z", "2027-13-15T08:00:00Z",
        "1800000000", "2027-01-15T08:00:00Z and then some text to make it long",
        "2027-01-15T08:00:00+000", "2027-01-15T08:00:00+00000", "2027-01-15T08:00:00+00:0", "2027-01-15T08:00:00+0:00",
        "2027-01-15T08:00:00+2400", "2027-01-15T08:00:00.Z", "2027-01-15T08:00:00+00:00Z",
    ])
    func rejects(text: String) {
        #expect(Timestamp.parse(text) == nil, "\(text) should not parse")
    }

    @Test("impossible calendar or clock fields are rejected, not rolled over into another instant", arguments: [
        "2027-01-15T25:00:00Z", "2027-01-15T08:60:00Z", "2027-02-30T08:00:00Z", "2027-01-32T08:00:00Z",
    ])
    func rejectsImpossibleFields(text: String) {
        #expect(Timestamp.parse(text) == nil, "\(text) parsed as \(Timestamp.parse(text).map { "\($0)" } ?? "")")
    }

    @Test("a date-time without a zone is rejected (it would silently be read as UTC)")
    func requiresZone() {
        #expect(Timestamp.parse("2027-01-15T08:00:00") == nil)
    }

    @Test("a body with an offset timestamp is stored as the same instant")
    func offsetInBody() throws {
        let body = PositionFixtures.object(["timestamp": #""2027-01-15T09:59:30.125+02:00""#])
        let positions = try PositionFixtures.decode(body)
        #expect(abs(positions[0].fixTime.timeIntervalSince(instant) - (-29.875)) < 0.001)
    }

    /// Microseconds since 1970, rounded: what PostgreSQL's to_timestamp keeps of a Date.
    static func micros(_ date: Date) -> Int64 { Int64((date.timeIntervalSince1970 * 1_000_000).rounded()) }

    @Test("fractional seconds are read exactly and rounded (not truncated) to the microsecond PostgreSQL keeps", arguments: [
        ("2027-01-15T08:00:00.318Z", 318_000), ("2027-01-15T08:00:00.999Z", 999_000), ("2027-01-15T08:00:00.999+00:00", 999_000),
        ("2027-01-15T08:00:00.5Z", 500_000), ("2027-01-15T08:00:00.123456Z", 123_456), ("2027-01-15T08:00:00.1234564Z", 123_456),
        ("2027-01-15T08:00:00.1234565Z", 123_457), ("2027-01-15T08:00:00.9999996Z", 1_000_000),
    ])
    func fractions(text: String, micros: Int64) throws {
        let date = try #require(Timestamp.parse(text), "\(text) should parse")
        #expect(Self.micros(date) - Self.micros(instant) == micros, "\(text)")
    }

    @Test("every millisecond of a second posted to POST /api/v1/locations or /api/v1/events is kept as written")
    func everyMillisecondOfRESTAndEvents() throws {
        let millis = Array(0..<1_000)
        let texts = millis.map { "2027-01-15T08:00:00." + String(format: "%03d", $0) + "Z" }
        let expected = millis.map { Self.micros(instant) + Int64($0) * 1_000 }
        let now = instant.addingTimeInterval(10)

        let rest = "[" + texts.map { #"{"latitude":1,"longitude":2,"timestamp":"\#($0)"}"# }.joined(separator: ",") + "]"
        let restTimes = try PositionValidator().decodeBody(Array(rest.utf8), now: now).map { Self.micros($0.fixTime) }
        let restWrong = zip(millis, zip(restTimes, expected)).filter { $0.1.0 != $0.1.1 }.map(\.0)
        #expect(restWrong.isEmpty, "POST /api/v1/locations: \(restWrong.count) of 1000 ms stored otherwise, e.g. \(restWrong.prefix(5))")

        let producer = "[" + texts.map { #"{"event_type":"runner.location_update","latitude":1,"longitude":2,"timestamp":"\#($0)"}"# }
            .joined(separator: ",") + "]"
        var producerTimes: [Int64] = []
        for event in try ProducerEvent.decodeBody(Array(producer.utf8), validator: PositionValidator(), now: now) {
            if case .locationUpdate(let position, _) = event { producerTimes.append(Self.micros(position.fixTime)) }
        }
        let producerWrong = zip(millis, zip(producerTimes, expected)).filter { $0.1.0 != $0.1.1 }.map(\.0)
        #expect(producerTimes.count == 1_000)
        #expect(producerWrong.isEmpty, "POST /api/v1/events: \(producerWrong.count) of 1000 ms stored otherwise, e.g. \(producerWrong.prefix(5))")
    }

    @Test("times read back from PostgreSQL are written out with the milliseconds they have")
    func formatsEveryMillisecond() {
        // As PostgresNIO decodes a timestamptz: microseconds since 2000 as a Double.
        let since2000 = Date(timeIntervalSince1970: 946_684_800)
        let stored = (Self.micros(instant) - 946_684_800_000_000)
        let wrong = (0..<1_000).filter { ms in
            let date = Date(timeInterval: Double(stored + Int64(ms) * 1_000) / 1_000_000, since: since2000)
            return RouteFormats.isoTime(date) != "2027-01-15T08:00:00." + String(format: "%03d", ms) + "Z"
        }
        #expect(wrong.isEmpty, "\(wrong.count) of 1000 ms written otherwise, e.g. \(wrong.prefix(5))")
    }
}
