import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Which sync table a source table feeds is configurable per tenant (`PUT /api/v1/sync/mappings`):
/// a mapped source table feeds its target keyed by its own key column; a mapping overrides a
/// source table named like a sync table; without one an unknown table is refused.
@Suite("sync: source table mappings", .timeLimit(.minutes(2)))
struct SyncMappingTests {
    @Test("a mapped source table feeds its target by its key column; replacing the mappings takes effect at once")
    func mappedTable() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let admin = sync.admin.accessToken
            let client: [String: Any] = ["client_id": "C-7", "name": "Mapped Shop", "lat": 48.8566, "lng": 2.3522]
            let event = Debezium.json(Debezium.mysql("c", table: "crm_clients", after: client, file: "mysql-bin.000001", pos: 10, tsMs: Debezium.baseMs))

            let unmapped = try await SyncAPI.post(live, event, apiKey: sync.syncKey)
            ValidationTests.expectError(unmapped, status: 422, code: "validation_failed", "no mapping yet")
            #expect(((try? unmapped.error())?["message"] as? String)?.contains("crm_clients") == true, "\(unmapped.body)")

            let put = try await live.put("/api/v1/sync/mappings", bearer: admin, json: """
                {"mappings":[{"source_table":"crm_clients","target_table":"customers","key_column":"client_id"},
                             {"source_table":"orders","target_table":"accounts"}]}
                """)
            #expect(put.status == 200, "\(put.body)")
            let expected: [[String: String]] = [
                ["source_table": "crm_clients", "target_table": "customers", "key_column": "client_id"],
                ["source_table": "orders", "target_table": "accounts", "key_column": "id"],
            ]
            #expect(try put.object()["mappings"] as? [[String: String]] == expected, "\(put.body)")
            #expect(try await SyncAPI.read(live, "/api/v1/sync/mappings", bearer: admin)["mappings"] as? [[String: String]] == expected)
            #expect(try await SyncAPI.read(live, "/api/v1/sync/status", bearer: admin)["mappings"] as? [[String: String]] == expected)

            let answer = try await SyncAPI.apply(live, Debezium.array([
                event,
                Debezium.json(Debezium.postgres("c", table: "orders", after: ["id": 5, "name": "really an account"], lsn: 50, tsMs: Debezium.baseMs)),
            ]), to: sync)
            check(SyncAPI.results(answer).map { $0["table"] as? String } == ["customers", "accounts"], "\(answer)")
            let row = try await SyncAPI.read(live, "/api/v1/sync/customers/C-7", bearer: admin)
            #expect((row["data"] as? [String: Any])?["name"] as? String == "Mapped Shop", "\(row)")
            let location = row["location"] as? [String: Any]
            #expect(location?["latitude"] as? Double == 48.8566 && location?["longitude"] as? Double == 2.3522, "\(row)")
            #expect(try await SyncAPI.read(live, "/api/v1/sync/accounts/5", bearer: admin)["id"] as? String == "5")
            #expect(try await SyncSQL.rows(live, .orders, tenant: sync.id).isEmpty, "the mapping overrides the same-named table")

            // The key column is required by the mapping: an event without it is refused.
            let keyless = Debezium.json(Debezium.mysql("u", table: "crm_clients", after: ["id": "C-7", "name": "x"],
                                                       file: "mysql-bin.000001", pos: 20, tsMs: Debezium.baseMs))
            let refused = try await SyncAPI.post(live, keyless, apiKey: sync.syncKey)
            ValidationTests.expectError(refused, status: 422, code: "validation_failed", "no client_id")
            #expect(((try? refused.error())?["message"] as? String)?.contains("after.client_id") == true, "\(refused.body)")

            // Replaced by an empty set: crm_clients is unknown again, orders feed orders.
            #expect(try await live.put("/api/v1/sync/mappings", bearer: admin, json: #"{"mappings":[]}"#).status == 200)
            ValidationTests.expectError(try await SyncAPI.post(live, event, apiKey: sync.syncKey), status: 422,
                                        code: "validation_failed", "mapping removed")
            let plain = try await SyncAPI.apply(live, Debezium.json(
                Debezium.postgres("c", table: "orders", after: ["id": 6], lsn: 60, tsMs: Debezium.baseMs)), to: sync)
            #expect(SyncAPI.results(plain).first?["table"] as? String == "orders", "\(plain)")
        }
    }

    @Test("mappings are validated (target table, duplicates, lengths) and a refused PUT changes nothing; they are per tenant")
    func validation() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let globex = try await SyncTenant.create(live, id: "globex")
            let admin = sync.admin.accessToken
            #expect(try await live.put("/api/v1/sync/mappings", bearer: admin,
                                       json: #"{"mappings":[{"source_table":"crm","target_table":"customers"}]}"#).status == 200)
            let cases: [(String, String, String?, Int?)] = [
                (#"{"mappings":[{"source_table":"a","target_table":"customers"},{"source_table":"b","target_table":"invoices"}]}"#,
                 "unknown target", "target_table", 1),
                (#"{"mappings":[{"source_table":"a","target_table":"customers"},{"source_table":"a","target_table":"orders"}]}"#,
                 "duplicate source", "source_table", 1),
                (#"{"mappings":[{"source_table":"","target_table":"customers"}]}"#, "empty source", "source_table", 0),
                (#"{"mappings":[{"source_table":"a","target_table":"customers","key_column":""}]}"#, "empty key", "key_column", 0),
                (#"{"mappings":[{"target_table":"customers"}]}"#, "no source", nil, nil),
            ]
            for (body, label, field, index) in cases {
                let reply = try await live.put("/api/v1/sync/mappings", bearer: admin, json: body)
                ValidationTests.expectError(reply, status: 422, code: "validation_failed", field: field, index: index, "\(label)")
            }
            ValidationTests.expectError(try await live.put("/api/v1/sync/mappings", bearer: admin, json: "[1"), status: 400,
                                        code: "malformed_json", "not JSON")
            let kept = try await SyncAPI.read(live, "/api/v1/sync/mappings", bearer: admin)
            #expect(kept["mappings"] as? [[String: String]] == [["source_table": "crm", "target_table": "customers", "key_column": "id"]],
                    "\(kept)")
            #expect((try await SyncAPI.read(live, "/api/v1/sync/mappings", bearer: globex.admin.accessToken)["mappings"] as? [Any])?.isEmpty == true)
            ValidationTests.expectError(try await SyncAPI.post(live, Debezium.json(Debezium.postgres("c", table: "crm", after: ["id": 1], lsn: 1,
                                                                                                    tsMs: Debezium.baseMs)), apiKey: globex.syncKey),
                                        status: 422, code: "validation_failed", "acme's mapping does not apply to globex")
        }
    }
}
