import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A batch is one transaction. By default a bad event at index k fails it: 422 naming k and the
/// reason, nothing applied, the error counted. With `?on_error=dead_letter` the bad event is kept
/// whole with its reason and the others apply. Bodies that are not change events are refused.
@Suite("sync: batches, failures and dead letters", .timeLimit(.minutes(3)))
struct SyncBatchTests {
    static let good0 = Debezium.json(Debezium.postgres("c", table: "accounts", after: Debezium.row(.accounts, id: 1, n: 1), lsn: 100, tsMs: Debezium.baseMs))
    static let good1 = Debezium.json(Debezium.postgres("c", table: "products", after: Debezium.row(.products, id: 1, n: 1), lsn: 110, tsMs: Debezium.baseMs))
    static let good3 = Debezium.json(Debezium.postgres("c", table: "orders", after: Debezium.row(.orders, id: 1, n: 1), lsn: 130, tsMs: Debezium.baseMs))

    /// Bad events as Debezium or a broken pipeline could send them, each with words its reason must contain.
    static func badEvents(wkb: String) -> [(label: String, event: String, reason: String)] {
        let ts = Debezium.baseMs
        var noOp = Debezium.postgres("c", table: "accounts", after: ["id": 9], lsn: 120, tsMs: ts)
        noOp["op"] = nil
        var noSource = Debezium.postgres("c", table: "accounts", after: ["id": 9], lsn: 120, tsMs: ts)
        noSource["source"] = nil
        var noTime = Debezium.postgres("c", table: "accounts", after: ["id": 9], lsn: 120, tsMs: ts)
        noTime["ts_ms"] = nil
        noTime["source"] = ["table": "accounts", "lsn": 120]
        return [
            ("no op", Debezium.json(noOp), "op"),
            ("truncate", Debezium.json(Debezium.postgres("t", table: "accounts", lsn: 120, tsMs: ts)), "truncate"),
            ("no source", Debezium.json(noSource), "source"),
            ("no time", Debezium.json(noTime), "ts_ms"),
            ("unknown table", Debezium.json(Debezium.postgres("c", table: "invoices", after: ["id": 9], lsn: 120, tsMs: ts)), "invoices"),
            ("no key", Debezium.json(Debezium.postgres("c", table: "accounts", after: ["name": "x"], lsn: 120, tsMs: ts)), "after.id"),
            ("delete without before", Debezium.json(Debezium.postgres("d", table: "accounts", lsn: 120, tsMs: ts)), "before"),
            ("not an object", #""just text""#, "object"),
            ("bad WKB", Debezium.json(Debezium.postgres("c", table: "customers", after: ["id": 9, "location": ["wkb": "AAAA", "srid": 4326]],
                                                        lsn: 120, tsMs: ts)), "after.location.wkb"),
            ("a line, not a point", Debezium.json(Debezium.postgres("c", table: "customers", after: ["id": 9, "location": ["wkb": wkb, "srid": 4326]],
                                                                    lsn: 120, tsMs: ts)), "point"),
            ("a projected SRID", Debezium.json(Debezium.postgres("c", table: "customers", after: ["id": 9, "location": ["wkb": "AAAA", "srid": 3857]],
                                                                 lsn: 120, tsMs: ts)), "srid"),
        ]
    }

    static func lineWKB(_ live: LiveNode) async throws -> String {
        try #require(try await SyncSQL.scalar(live, "SELECT encode(ST_AsBinary('LINESTRING(0 0, 1 1)'::geometry), 'base64')"))
    }

    @Test("fail mode: a bad event at index 2 fails the whole batch with its index and reason; nothing is applied; the error is counted")
    func failMode() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            for (label, bad, reason) in Self.badEvents(wkb: try await Self.lineWKB(live)) {
                let reply = try await SyncAPI.post(live, Debezium.array([Self.good0, Self.good1, bad, Self.good3]), apiKey: sync.syncKey)
                ValidationTests.expectError(reply, status: 422, code: "validation_failed", index: 2, "\(label)")
                let message = (try? reply.error())?["message"] as? String ?? ""
                #expect(message.contains(reason) && !message.hasPrefix("event "), "\(label): \(message)")
                // One event alone (not an array): the same reason, no index. (A body that is a
                // bare string is no change event at all: 400, see `bodies`.)
                guard label != "not an object" else { continue }
                let single = try await SyncAPI.post(live, bad, apiKey: sync.syncKey)
                ValidationTests.expectError(single, status: 422, code: "validation_failed", "\(label) alone")
                #expect(((try? single.error())?["message"] as? String)?.contains(reason) == true, "\(label) alone: \(single.body)")
                #expect((try? single.error())?["index"] == nil, "\(label) alone: \(single.body)")
            }
            for table in SyncTable.allCases {
                #expect(try await SyncSQL.rows(live, table, tenant: sync.id).isEmpty, "nothing of any batch in \(table)")
            }
            // The error is counted against the table it was meant for, in a transaction of its own.
            let customers = try #require(try await SyncSQL.state(live, .customers))
            #expect(customers.applied == 0 && customers.errors == 6 && customers.lastError?.contains("srid") == true, "\(customers)")
            #expect(try await SyncSQL.state(live, .products)?.applied ?? 0 == 0)
            let lag = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: sync.admin.accessToken)
            #expect(SyncAPI.table(.customers, in: lag)["errors"] as? Int == 6, "\(lag)")
            #expect(SyncAPI.table(.accounts, in: lag)["status"] as? String == "no_data", "nothing applied, no lag: \(lag)")

            // The same batch without the bad event applies whole.
            let fixed = try await SyncAPI.apply(live, Debezium.array([Self.good0, Self.good1, Self.good3]), to: sync)
            #expect(SyncAPI.outcomes(fixed) == ["applied", "applied", "applied"], "\(fixed)")
        }
    }

    @Test("dead-letter mode: the bad event is kept whole with its reason, the others apply, the answer lists it")
    func deadLetterMode() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let bad = Self.badEvents(wkb: try await Self.lineWKB(live))
            let wkb = try require(bad.first { $0.label == "bad WKB" })
            let noKey = try require(bad.first { $0.label == "no key" })
            let answer = try await SyncAPI.apply(live, Debezium.array([Self.good0, Self.good1, wkb.event, Self.good3, noKey.event]),
                                                 to: sync, onError: "dead_letter")
            #expect(SyncAPI.outcomes(answer) == ["applied", "applied", "dead_lettered", "applied", "dead_lettered"], "\(answer)")
            #expect(answer["applied"] as? Int == 3 && answer["dead_lettered"] as? Int == 2, "\(answer)")
            let results = SyncAPI.results(answer)
            #expect(results[2]["table"] as? String == "customers" && (results[2]["error"] as? String)?.contains("wkb") == true, "\(answer)")
            #expect(results[4]["table"] as? String == "accounts" && (results[4]["error"] as? String)?.contains("after.id") == true, "\(answer)")
            #expect(try await SyncSQL.rows(live, .orders, tenant: sync.id).count == 1)
            #expect(try await SyncSQL.rows(live, .customers, tenant: sync.id).isEmpty)

            let letters = try await SyncAPI.read(live, "/api/v1/sync/dead-letters", bearer: sync.admin.accessToken)
            let list = letters["dead_letters"] as? [[String: Any]] ?? []
            check(list.map { $0["table"] as? String } == ["accounts", "customers"], "newest first: \(letters)")
            for (letter, sent) in zip(list, [noKey.event, wkb.event]) {
                let original = try JSONSerialization.jsonObject(with: Data(sent.utf8)) as? [String: Any] ?? [:]
                #expect(Debezium.sameJSON(letter["event"] as? [String: Any] ?? [:], original), "kept whole: \(letter)")
                #expect((letter["reason"] as? String)?.isEmpty == false && letter["received_at"] is String, "\(letter)")
            }
            #expect(list.first?["source_table"] as? String == "accounts")
            // Paged with a cursor.
            let first = try await SyncAPI.read(live, "/api/v1/sync/dead-letters?limit=1", bearer: sync.admin.accessToken)
            let cursor = try #require(first["next_cursor"] as? String, "\(first)")
            let second = try await SyncAPI.read(live, "/api/v1/sync/dead-letters?limit=1&cursor=\(cursor)", bearer: sync.admin.accessToken)
            #expect((second["dead_letters"] as? [[String: Any]])?.first?["table"] as? String == "customers", "\(second)")
            // Counted: errors per table, and the status document's dead-letter count.
            #expect(try await SyncSQL.state(live, .customers)?.errors == 1)
            let status = try await SyncAPI.read(live, "/api/v1/sync/status", bearer: sync.admin.accessToken)
            #expect(status["dead_letters"] as? Int == 2, "\(status)")
        }
    }

    @Test("customers: latitude/longitude columns out of range are bad events naming the field: 422 by default, dead letters with on_error=dead_letter")
    func coordinatesOutOfRange() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let bad: [(row: [String: Any], field: String)] = [
                (["id": 1, "name": "Off the map", "lat": 123, "lon": 10], "after.lat"),
                (["id": 2, "latitude": 52.5, "longitude": -180.5], "after.longitude"),
                (["id": 3, "latitude": "-91", "longitude": "13.4"], "after.latitude"),  // DECIMALs as strings
                (["id": 4, "lat": 10, "lng": 200], "after.lng"),
            ]
            let events = bad.enumerated().map { index, entry in
                Debezium.json(Debezium.postgres("c", table: "customers", after: entry.row, lsn: 200 + Int64(index), tsMs: Debezium.baseMs))
            }
            for (event, entry) in zip(events, bad) {
                let reply = try await SyncAPI.post(live, Debezium.array([Self.good0, event]), apiKey: sync.syncKey)
                ValidationTests.expectError(reply, status: 422, code: "validation_failed", index: 1, "\(entry.field)")
                let message = (try? reply.error())?["message"] as? String ?? ""
                #expect(message.hasPrefix(entry.field + ": ") && message.contains("out of range"), "\(entry.field): \(message)")
            }
            #expect(try await SyncSQL.rows(live, .customers, tenant: sync.id).isEmpty)

            // In range (Sydney) applies beside them; the bad ones are kept whole with their reasons.
            let sydney = Debezium.json(Debezium.postgres("c", table: "customers", after: ["id": 5, "lat": -33.87, "lon": 151.21],
                                                         lsn: 300, tsMs: Debezium.baseMs))
            let answer = try await SyncAPI.apply(live, Debezium.array(events + [sydney]), to: sync, onError: "dead_letter")
            #expect(SyncAPI.outcomes(answer) == ["dead_lettered", "dead_lettered", "dead_lettered", "dead_lettered", "applied"], "\(answer)")
            for (result, entry) in zip(SyncAPI.results(answer), bad) {
                #expect(result["table"] as? String == "customers" && (result["error"] as? String)?.hasPrefix(entry.field + ": ") == true,
                        "\(result)")
            }
            let stored = try await SyncAPI.read(live, "/api/v1/sync/customers/5", bearer: sync.admin.accessToken)
            let location = stored["location"] as? [String: Any]
            #expect(location?["latitude"] as? Double == -33.87 && location?["longitude"] as? Double == 151.21, "\(stored)")
            #expect(try await SyncSQL.rows(live, .customers, tenant: sync.id).map(\.id) == ["5"])

            let letters = try await SyncAPI.read(live, "/api/v1/sync/dead-letters", bearer: sync.admin.accessToken)
            let list = letters["dead_letters"] as? [[String: Any]] ?? []
            check(list.map { $0["reason"] as? String ?? "" }.map { $0.components(separatedBy: ": ").first ?? "" }
                  == bad.reversed().map(\.field), "newest first, each naming its field: \(letters)")
            check(list.allSatisfy { $0["table"] as? String == "customers" }, "\(letters)")
            #expect(try await SyncSQL.state(live, .customers)?.errors == 8, "4 refused batches and 4 dead letters")
        }
    }

    @Test("bodies that are no change events: not JSON 400, a bare string 400, NUL at index k 422 in both modes, too many 422, bad on_error 422; [] and null are no-ops")
    func bodies() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let key = sync.syncKey
            ValidationTests.expectError(try await SyncAPI.post(live, "{not json", apiKey: key), status: 400, code: "malformed_json", "not JSON")
            ValidationTests.expectError(try await SyncAPI.post(live, #""abc""#, apiKey: key), status: 400, code: "malformed_json", "a string")
            ValidationTests.expectError(try await SyncAPI.post(live, "42", apiKey: key), status: 400, code: "malformed_json", "a number")
            ValidationTests.expectError(try await SyncAPI.post(live, "", apiKey: key), status: 400, code: "malformed_json", "empty")

            // U+0000 cannot be stored in jsonb: refused naming the event, in either mode.
            let nul = #"{"op":"c","after":{"id":"x\u0000y"},"source":{"table":"users","ts_ms":1732000000000}}"#
            for mode in [nil, "dead_letter"] {
                let reply = try await SyncAPI.post(live, Debezium.array([Self.good0, Self.good1, Self.good3, nul]), apiKey: key, onError: mode)
                ValidationTests.expectError(reply, status: 422, code: "validation_failed", index: 3, "NUL (\(mode ?? "fail"))")
                #expect(((try? reply.error())?["message"] as? String)?.contains("NUL") == true, "\(reply.body)")
            }
            let nulKey = #"{"op":"c","after":{"id":"x","na\u0000me":1},"source":{"table":"users","ts_ms":1732000000000}}"#
            ValidationTests.expectError(try await SyncAPI.post(live, nulKey, apiKey: key), status: 422, code: "validation_failed", "NUL in a key")
            // An escaped backslash before u0000 is plain text, not NUL.
            let notNul = #"{"op":"c","after":{"id":"x\\u0000y"},"source":{"table":"users","ts_ms":1732000000000}}"#
            #expect(SyncAPI.outcomes(try await SyncAPI.apply(live, notNul, to: sync)) == ["applied"])
            #expect(try await SyncSQL.rows(live, .users, tenant: sync.id).map(\.id) == [#"x\u0000y"#])
            for table in [SyncTable.accounts, .products, .orders] {
                #expect(try await SyncSQL.rows(live, table, tenant: sync.id).isEmpty, "nothing applied from the NUL batches")
            }

            let tooMany = "[" + Array(repeating: "null", count: SyncRoutesLimits.maxEvents + 1).joined(separator: ",") + "]"
            ValidationTests.expectError(try await SyncAPI.post(live, tooMany, apiKey: key), status: 422, code: "validation_failed", "too many")
            ValidationTests.expectError(try await SyncAPI.post(live, "[]", apiKey: key, onError: "skip"), status: 422,
                                        code: "validation_failed", field: "on_error", "on_error=skip")

            let empty = try await SyncAPI.apply(live, "[]", to: sync)
            #expect(empty["applied"] as? Int == 0 && SyncAPI.results(empty).isEmpty, "\(empty)")
            let tombstone = try await SyncAPI.apply(live, "null", to: sync)
            #expect(SyncAPI.outcomes(tombstone) == ["ignored"] && tombstone["ignored"] as? Int == 1, "\(tombstone)")
        }
    }
}

/// The limits the sync endpoint documents.
enum SyncRoutesLimits {
    static let maxEvents = 10_000
}
