import Foundation
import NIOCore
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Bad requests are answered with `{"error": {"code", "message", "field"?, "index"?}}` and the
/// right status, and write nothing.
@Suite("REST: authentication and validation errors", .timeLimit(.minutes(3)))
struct ValidationTests {
    /// Requires the reply to be the JSON error shape with this status and code (and field/index when given).
    static func expectError(_ reply: LiveNode.Reply, status: Int, code: String, field: String? = nil, index: Int? = nil,
                            _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(reply.status == status, "\(comment): status \(reply.status), body \(reply.body.prefix(300))", sourceLocation: sourceLocation)
        guard let error = try? reply.error() else {
            Issue.record("\(comment): not a JSON error body: \(reply.body.prefix(300))", sourceLocation: sourceLocation)
            return
        }
        #expect(error["code"] as? String == code, "\(comment): \(error)", sourceLocation: sourceLocation)
        #expect((error["message"] as? String)?.isEmpty == false, "\(comment): no message", sourceLocation: sourceLocation)
        if let field { #expect(error["field"] as? String == field, "\(comment): \(error)", sourceLocation: sourceLocation) }
        if let index { #expect(error["index"] as? Int == index, "\(comment): \(error)", sourceLocation: sourceLocation) }
    }

    static func positionCount(_ url: DatabaseURL) async throws -> Int {
        try await TestDatabase.withConnection(url) { connection in
            try await Fixes.count("SELECT count(*)::int8 FROM positions", on: connection)
        }
    }

    @Test("missing or wrong API key: 401 on ingest and on streams")
    func authentication() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let body = Fixes.object(1)
            Self.expectError(try await live.post("/api/v1/locations", apiKey: nil, json: body), status: 401, code: "unauthorized", "missing key")
            Self.expectError(try await live.post("/api/v1/locations", apiKey: "pgt_" + String(repeating: "0", count: 64), json: body),
                             status: 401, code: "unauthorized", "well-formed but unknown key")
            Self.expectError(try await live.post("/api/v1/locations", apiKey: setup.apiKey + "x", json: body),
                             status: 401, code: "unauthorized", "malformed key")
            Self.expectError(try await live.get("/api/v1/stream"), status: 401, code: "unauthorized", "stream without key")
            Self.expectError(try await live.get("/api/v1/stream?api_key=nope"), status: 401, code: "unauthorized", "stream with a wrong key")
            Self.expectError(try await live.get("/api/v1/bookings/trip-1/stream"), status: 401, code: "unauthorized", "booking stream without key")
            Self.expectError(try await live.get("/api/v1/bookings/bad%20id/stream", apiKey: setup.apiKey),
                             status: 422, code: "validation_failed", field: "id", "booking id with a space")
            #expect(try await Self.positionCount(live.databaseURL) == 0)
        }
    }

    @Test("malformed and out-of-range single positions: 400 / 422 naming the field")
    func singlePositionErrors() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            func post(_ json: String) async throws -> LiveNode.Reply {
                try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: json)
            }
            Self.expectError(try await post(#"{"latitude": 52.5, "longitude": "#), status: 400, code: "malformed_json", "truncated JSON")
            Self.expectError(try await post("not json"), status: 400, code: "malformed_json", "not JSON")
            Self.expectError(try await post(Fixes.object(1, overriding: ["latitude": "91"])),
                             status: 422, code: "validation_failed", field: "latitude", "latitude 91")
            Self.expectError(try await post(Fixes.object(1, overriding: ["longitude": "-181"])),
                             status: 422, code: "validation_failed", field: "longitude", "longitude -181")
            Self.expectError(try await post(Fixes.object(1, overriding: ["speed": "-1"])),
                             status: 422, code: "validation_failed", field: "speed", "negative speed")
            Self.expectError(try await post(Fixes.object(1, overriding: ["heading": "360"])),
                             status: 422, code: "validation_failed", field: "heading", "heading 360")
            let future = Date().addingTimeInterval(600).iso8601
            Self.expectError(try await post(Fixes.object(1, overriding: ["timestamp": "\"\(future)\""])),
                             status: 422, code: "validation_failed", field: "timestamp", "timestamp 10 minutes ahead")
            Self.expectError(try await post(Fixes.object(1, overriding: ["timestamp": nil])),
                             status: 422, code: "validation_failed", field: "timestamp", "missing timestamp")
            #expect(try await Self.positionCount(live.databaseURL) == 0)
        }
    }

    @Test("batches: a bad element at index 3 rejects all with index 3; 1,001 positions is 422; > 1 MiB is 413")
    func batchErrors() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            func post(_ json: String) async throws -> LiveNode.Reply {
                try await live.post("/api/v1/locations", apiKey: setup.apiKey, json: json)
            }
            let elements = (0..<6).map { n in n == 3 ? Fixes.object(n, overriding: ["latitude": "95"]) : Fixes.object(n) }
            let badIndex = try await post("[" + elements.joined(separator: ",") + "]")
            Self.expectError(badIndex, status: 422, code: "validation_failed", field: "latitude", index: 3, "bad element at index 3")
            #expect(try await Self.positionCount(live.databaseURL) == 0, "a rejected batch writes no rows")

            Self.expectError(try await post(Fixes.array(0..<1_001)), status: 422, code: "validation_failed", "1,001 positions")
            #expect(try await Self.positionCount(live.databaseURL) == 0)

            var huge = Fixes.array(0..<1_000)
            huge.removeLast()
            huge += "," + String(repeating: " ", count: (1 << 20) + 1) + Fixes.object(1_000) + "]"
            #expect(huge.utf8.count > 1 << 20)
            Self.expectError(try await post(huge), status: 413, code: "payload_too_large", "body over 1 MiB")
            #expect(try await Self.positionCount(live.databaseURL) == 0)

            // The same node still accepts a good batch afterwards.
            try await live.postPositions(Fixes.array(0..<1_000), apiKey: setup.apiKey, expecting: 1_000)
            #expect(try await Self.positionCount(live.databaseURL) == 1_000)
        }
    }
}
