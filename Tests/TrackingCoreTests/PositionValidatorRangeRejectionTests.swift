import Foundation
import Testing
import TrackingCore

/// One field out of its rules: 422 `validation_failed` naming the field.
struct FieldRejection: Sendable, CustomTestStringConvertible {
    let field: String
    let set: [String: String]
    var removing: Set<String> = []
    var testDescription: String { "\(field) = \(set[field] ?? "missing")" }
}

@Suite("PositionValidator: values out of range")
struct PositionValidatorRangeRejectionTests {
    static let cases: [FieldRejection] = [
        FieldRejection(field: "latitude", set: ["latitude": "90.0001"]),
        FieldRejection(field: "latitude", set: ["latitude": "-91"]),
        FieldRejection(field: "latitude", set: [:], removing: ["latitude"]),
        FieldRejection(field: "latitude", set: ["latitude": "null"]),
        FieldRejection(field: "longitude", set: ["longitude": "180.5"]),
        FieldRejection(field: "longitude", set: ["longitude": "-181"]),
        FieldRejection(field: "longitude", set: [:], removing: ["longitude"]),
        FieldRejection(field: "speed", set: ["speed": "-0.1"]),
        FieldRejection(field: "heading", set: ["heading": "360"]),
        FieldRejection(field: "heading", set: ["heading": "-1"]),
        FieldRejection(field: "accuracy", set: ["accuracy": "-0.5"]),
        FieldRejection(field: "battery", set: ["battery": "100.5"]),
        FieldRejection(field: "battery", set: ["battery": "-1"]),
        FieldRejection(field: "timestamp", set: [:], removing: ["timestamp"]),
        FieldRejection(field: "timestamp", set: ["timestamp": #""not a time""#]),
        FieldRejection(field: "timestamp", set: ["timestamp": #""2027-01-15 08:00:00Z""#]),
        FieldRejection(field: "timestamp", set: ["timestamp": PositionFixtures.timestamp(offset: 301)]),
        FieldRejection(field: "timestamp", set: ["timestamp": PositionFixtures.timestamp(offset: -(30 * 86_400 + 1))]),
        FieldRejection(field: "booking_id", set: ["booking_id": #""has space""#]),
        FieldRejection(field: "booking_id", set: ["booking_id": #""a/b""#]),
        FieldRejection(field: "booking_id", set: ["booking_id": #""""#]),
        FieldRejection(field: "booking_id", set: ["booking_id": "\"" + String(repeating: "b", count: 41) + "\""]),
    ]

    @Test("a single object is rejected with 422 naming the field and no index", arguments: cases)
    func singleObject(_ rejection: FieldRejection) throws {
        let body = PositionFixtures.object(rejection.set, removing: rejection.removing)
        let error = try #require(PositionFixtures.rejection(body))
        #expect(error.status == 422)
        #expect(error.code == "validation_failed")
        #expect(error.field == rejection.field)
        #expect(error.index == nil)
        #expect(error.message.hasPrefix(rejection.field))
    }

    @Test("inside an array the error also names the element's index", arguments: cases)
    func inArray(_ rejection: FieldRejection) throws {
        let bad = PositionFixtures.object(rejection.set, removing: rejection.removing)
        let body = PositionFixtures.array([PositionFixtures.object(), PositionFixtures.object(), bad, PositionFixtures.object()])
        let error = try #require(PositionFixtures.rejection(body))
        #expect(error.status == 422)
        #expect(error.field == rejection.field)
        #expect(error.index == 2)
        #expect(error.message.contains("position 2"))
    }

    @Test("the first bad element is the one reported")
    func firstBadElement() throws {
        let body = PositionFixtures.array([
            PositionFixtures.object(), PositionFixtures.object(["speed": "-1"]), PositionFixtures.object(["battery": "900"]),
        ])
        let error = try #require(PositionFixtures.rejection(body))
        #expect(error.field == "speed")
        #expect(error.index == 1)
    }

    @Test("the future-skew and age limits come from the validator's configuration")
    func configuredWindow() throws {
        let strict = PositionValidator(maxFutureSkew: 10, maxAge: 3_600)
        let future = PositionFixtures.object(["timestamp": PositionFixtures.timestamp(offset: 11)])
        let old = PositionFixtures.object(["timestamp": PositionFixtures.timestamp(offset: -3_601)])
        #expect(PositionFixtures.rejection(future, validator: strict)?.field == "timestamp")
        #expect(PositionFixtures.rejection(old, validator: strict)?.field == "timestamp")
        #expect(try PositionFixtures.decode(future).count == 1, "the default validator allows 300 s of skew")
    }

    @Test("non-finite numbers are rejected", arguments: [
        ("latitude", PositionInput(latitude: .nan, longitude: 1, timestamp: "2027-01-15T08:00:00Z")),
        ("longitude", PositionInput(latitude: 1, longitude: .infinity, timestamp: "2027-01-15T08:00:00Z")),
        ("speed", PositionInput(latitude: 1, longitude: 1, timestamp: "2027-01-15T08:00:00Z", speed: .infinity)),
        ("heading", PositionInput(latitude: 1, longitude: 1, timestamp: "2027-01-15T08:00:00Z", heading: .nan)),
        ("altitude", PositionInput(latitude: 1, longitude: 1, timestamp: "2027-01-15T08:00:00Z", altitude: -.infinity)),
        ("accuracy", PositionInput(latitude: 1, longitude: 1, timestamp: "2027-01-15T08:00:00Z", accuracy: .nan)),
        ("battery", PositionInput(latitude: 1, longitude: 1, timestamp: "2027-01-15T08:00:00Z", battery: .nan)),
    ])
    func nonFinite(field: String, input: PositionInput) {
        do {
            _ = try PositionValidator().validate(input, index: 4, now: PositionFixtures.now)
            Issue.record("\(field): a non-finite value was accepted")
        } catch {
            #expect(error.status == 422)
            #expect(error.field == field)
            #expect(error.index == 4)
        }
    }

    @Test("a number too large for a Double cannot smuggle in infinity", arguments: ["latitude", "speed", "battery"])
    func overflowingNumber(field: String) throws {
        let error = try #require(PositionFixtures.rejection(PositionFixtures.object([field: "1e400"])))
        #expect(error.status == 400 || (error.status == 422 && error.field == field), "\(error)")
    }
}
