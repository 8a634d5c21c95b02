import Foundation
import Testing
import TrackingCore

@Suite("Doorbell: NOTIFY payload decoding")
struct DoorbellTests {
    static func decode(_ json: String) throws -> Doorbell {
        try JSONDecoder().decode(Doorbell.self, from: Data(json.utf8))
    }

    @Test("an inline payload carries its events with seq, kind and the payload text as is")
    func inline() throws {
        let bell = try Self.decode(#"""
            {"t": "acme", "b": null, "f": 7, "l": 8, "n": 2, "e": [
              {"s": 7, "k": "location_update", "d": "{\"seq\": 7, \"type\": \"location_update\"}"},
              {"s": 8, "k": "trip_status", "d": "{\"seq\": 8}"}]}
            """#)
        #expect(bell.tenant == "acme")
        #expect(bell.booking == nil)
        #expect(bell.first == 7)
        #expect(bell.last == 8)
        #expect(bell.count == 2)
        #expect(bell.events == [
            ChangeEvent(seq: 7, kind: "location_update", json: #"{"seq": 7, "type": "location_update"}"#),
            ChangeEvent(seq: 8, kind: "trip_status", json: #"{"seq": 8}"#),
        ])
    }

    @Test("a range-only payload has no events; the listener reads the log")
    func rangeOnly() throws {
        let bell = try Self.decode(#"{"t": "acme", "b": "B-17", "f": 1, "l": 1000, "n": 500}"#)
        #expect(bell.booking == "B-17")
        #expect(bell.first == 1)
        #expect(bell.last == 1000)
        #expect(bell.count == 500)
        #expect(bell.events == nil)
    }

    @Test("\"e\": null (too many rows to inline) also means range only")
    func nullEvents() throws {
        #expect(try Self.decode(#"{"t": "acme", "b": "x", "f": 1, "l": 20, "n": 20, "e": null}"#).events == nil)
    }

    @Test("payloads missing a required key, or with wrong types, do not decode", arguments: [
        #"{"b": null, "f": 1, "l": 1, "n": 1}"#,
        #"{"t": "acme", "l": 1, "n": 1}"#,
        #"{"t": "acme", "f": 1, "n": 1}"#,
        #"{"t": "acme", "f": 1, "l": 1}"#,
        #"{"t": "acme", "f": "1", "l": 1, "n": 1}"#,
        #"{"t": "acme", "f": 1, "l": 1, "n": 1, "e": [{"s": 1, "k": "x"}]}"#,
        "not json",
    ])
    func invalid(json: String) {
        #expect(throws: (any Error).self) { try Self.decode(json) }
    }
}
