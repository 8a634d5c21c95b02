import Foundation
import Testing
import TrackingCore

@Suite("PositionValidator.parseTimestamp")
struct TimestampParsingTests {
    /// 2027-01-15T08:00:00Z.
    let instant = Date(timeIntervalSince1970: 1_800_000_000)

    @Test("Z, numeric offsets and fractional seconds name the same instant", arguments: [
        ("2027-01-15T08:00:00Z", 0.0),
        ("2027-01-15T10:00:00+02:00", 0.0),
        ("2027-01-15T03:00:00-05:00", 0.0),
        ("2027-01-15T08:00:00.250Z", 0.25),
        ("2027-01-15T09:30:00.5+01:30", 0.5),
    ])
    func parses(text: String, fraction: Double) throws {
        let date = try #require(PositionValidator.parseTimestamp(text), "\(text) should parse")
        #expect(abs(date.timeIntervalSince(instant) - fraction) < 0.001, "\(text) parsed as \(date)")
    }

    @Test("text that is not an ISO-8601 date-time does not parse", arguments: [
        "", "yesterday", "2027-01-15", "08:00:00Z", "2027-13-15T08:00:00Z",
        "1800000000", "2027-01-15T08:00:00Z and then some text to make it long",
    ])
    func rejects(text: String) {
        #expect(PositionValidator.parseTimestamp(text) == nil, "\(text) should not parse")
    }

    @Test("impossible calendar or clock fields are rejected, not rolled over into another instant", arguments: [
        "2027-01-15T25:00:00Z", "2027-01-15T08:60:00Z", "2027-02-30T08:00:00Z", "2027-01-32T08:00:00Z",
    ])
    func rejectsImpossibleFields(text: String) {
        #expect(PositionValidator.parseTimestamp(text) == nil, "\(text) parsed as \(PositionValidator.parseTimestamp(text).map { "\($0)" } ?? "")")
    }

    @Test("a date-time without a zone is rejected (it would silently be read as UTC)")
    func requiresZone() {
        #expect(PositionValidator.parseTimestamp("2027-01-15T08:00:00") == nil)
    }

    @Test("a body with an offset timestamp is stored as the same instant")
    func offsetInBody() throws {
        let body = PositionFixtures.object(["timestamp": #""2027-01-15T09:59:30.125+02:00""#])
        let positions = try PositionFixtures.decode(body)
        #expect(abs(positions[0].fixTime.timeIntervalSince(instant) - (-29.875)) < 0.001)
    }
}
