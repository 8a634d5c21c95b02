import Foundation
import Testing
import TrackingCore

/// A fixed clock and request bodies built from it, so validation tests never depend on today.
enum PositionFixtures {
    /// 2027-01-15T08:00:00Z.
    static let now = Date(timeIntervalSince1970: 1_800_000_000)

    /// A valid position as raw JSON fragments per key; tests override or remove single keys.
    static let baseFields: [String: String] = [
        "latitude": "52.52",
        "longitude": "13.405",
        "timestamp": #""2027-01-15T07:59:00Z""#,
    ]

    /// One position object. `set` values are raw JSON (`"\"text\""` for a string, `"12"` for a number).
    static func object(_ set: [String: String] = [:], removing: Set<String> = []) -> String {
        var fields = baseFields.merging(set) { _, new in new }
        for key in removing { fields[key] = nil }
        let members = fields.keys.sorted().map { "\"\($0)\": \(fields[$0]!)" }
        return "{" + members.joined(separator: ", ") + "}"
    }

    static func array(_ objects: [String]) -> String { "[" + objects.joined(separator: ",") + "]" }

    /// ISO-8601 text of `now + offset` seconds.
    static func timestamp(offset: TimeInterval) -> String {
        "\"" + now.addingTimeInterval(offset).formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: true)) + "\""
    }

    static func decode(_ body: String, validator: PositionValidator = PositionValidator()) throws(APIError) -> [ValidatedPosition] {
        try validator.decodeBody(Array(body.utf8), now: now)
    }

    /// The error a body is rejected with; records an issue if it is accepted.
    static func rejection(_ body: String, validator: PositionValidator = PositionValidator(),
                          sourceLocation: SourceLocation = #_sourceLocation) -> APIError? {
        do {
            let accepted = try validator.decodeBody(Array(body.utf8), now: now)
            Issue.record("expected a rejection, got \(accepted.count) position(s) for \(body.prefix(200))", sourceLocation: sourceLocation)
            return nil
        } catch {
            return error
        }
    }
}
