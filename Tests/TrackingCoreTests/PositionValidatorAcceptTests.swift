import Foundation
import Testing
import TrackingCore

@Suite("PositionValidator: accepted bodies")
struct PositionValidatorAcceptTests {
    @Test("a complete object keeps every field")
    func completeObject() throws {
        let body = PositionFixtures.object([
            "speed": "3.5", "heading": "90", "altitude": "34", "accuracy": "5", "battery": "80",
            "booking_id": #""B-1.x:y_z""#, "attributes": #"{"ignition": true, "odometer": 1200}"#,
        ])
        let positions = try PositionFixtures.decode(body)
        try #require(positions.count == 1)
        let position = positions[0]
        #expect(position.latitude == 52.52)
        #expect(position.longitude == 13.405)
        #expect(position.fixTime == PositionFixtures.now.addingTimeInterval(-60))
        #expect(position.speed == 3.5)
        #expect(position.heading == 90)
        #expect(position.altitude == 34)
        #expect(position.accuracy == 5)
        #expect(position.battery == 80)
        #expect(position.bookingID?.rawValue == "B-1.x:y_z")
        #expect(position.attributes == ["ignition": .bool(true), "odometer": .number(1200)])
    }

    @Test("optional fields may be absent or null")
    func minimalObject() throws {
        let positions = try PositionFixtures.decode(PositionFixtures.object(["speed": "null", "booking_id": "null"]))
        try #require(positions.count == 1)
        #expect(positions[0].speed == nil)
        #expect(positions[0].heading == nil)
        #expect(positions[0].bookingID == nil)
        #expect(positions[0].attributes == [:])
    }

    @Test("an array keeps its order")
    func arrayInOrder() throws {
        let body = PositionFixtures.array([
            PositionFixtures.object(["latitude": "1"]),
            PositionFixtures.object(["latitude": "2"]),
            PositionFixtures.object(["latitude": "3"]),
        ])
        let positions = try PositionFixtures.decode(body)
        #expect(positions.map(\.latitude) == [1, 2, 3])
    }

    @Test("a batch of exactly 1,000 positions is accepted")
    func fullBatch() throws {
        let body = PositionFixtures.array(Array(repeating: PositionFixtures.object(), count: PositionValidator.maxBatchSize))
        #expect(try PositionFixtures.decode(body).count == 1_000)
    }

    @Test("range limits are inclusive where the rules say so", arguments: [
        ["latitude": "90", "longitude": "180"],
        ["latitude": "-90", "longitude": "-180"],
        ["heading": "0"], ["heading": "359.99"],
        ["battery": "0"], ["battery": "100"],
        ["speed": "0"], ["accuracy": "0"],
        ["altitude": "-420.5"],
    ])
    func boundaries(fields: [String: String]) throws {
        #expect(try PositionFixtures.decode(PositionFixtures.object(fields)).count == 1)
    }

    @Test("a fix just inside the future skew and just inside the age window is accepted")
    func timeWindowEdges() throws {
        let validator = PositionValidator(maxFutureSkew: 300, maxAge: 30 * 86_400)
        let future = PositionFixtures.object(["timestamp": PositionFixtures.timestamp(offset: 299)])
        let old = PositionFixtures.object(["timestamp": PositionFixtures.timestamp(offset: -(30 * 86_400 - 1))])
        #expect(try PositionFixtures.decode(future, validator: validator).count == 1)
        #expect(try PositionFixtures.decode(old, validator: validator).count == 1)
    }

    @Test("leading whitespace before the body is fine")
    func leadingWhitespace() throws {
        #expect(try PositionFixtures.decode(" \n\t" + PositionFixtures.object()).count == 1)
    }
}
