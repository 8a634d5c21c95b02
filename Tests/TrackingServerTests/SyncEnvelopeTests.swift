import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Real Debezium envelopes for every sync table over `POST /api/v1/sync/changes`: snapshot
/// reads, creates, updates, deletes and Kafka tombstones, with and without the JSON converter's
/// schema wrapper, then what `GET /api/v1/sync/{table}/{id}` and the paged list answer.
@Suite("sync: Debezium envelopes per table", .timeLimit(.minutes(3)))
struct SyncEnvelopeTests {
    @Test("r, c, u, d and tombstones, wrapped and bare, for each table", arguments: SyncTable.allCases)
    func lifecycle(_ table: SyncTable) async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let t = table.rawValue
            let ts = Debezium.baseMs
            // Ids as the source has them: numbers for some tables, text for others.
            let (snapId, newId, goneId): (Any, Any, Any) = table == .orders || table == .users
                ? ("A-1", "A-2", "A-3") : (1, 2, 3)
            let snap = Debezium.row(table, id: snapId, n: 1)
            let created = Debezium.row(table, id: newId, n: 2)
            let gone = Debezium.row(table, id: goneId, n: 3)
            let updated = Debezium.row(table, id: snapId, n: 4)

            // The initial snapshot (op r, all events at the snapshot's LSN, snapshot marked),
            // schema-wrapped for one row and bare for the other.
            let snapshot = Debezium.array([
                Debezium.wrapped(Debezium.postgres("r", table: t, after: snap, lsn: 1_000, tsMs: ts, snapshot: "first")),
                Debezium.postgres("r", table: t, after: gone, lsn: 1_000, tsMs: ts, snapshot: "last"),
            ])
            let first = try await SyncAPI.apply(live, snapshot, to: sync)
            #expect(SyncAPI.outcomes(first) == ["applied", "applied"], "\(first)")
            #expect(first["applied"] as? Int == 2 && first["skipped"] as? Int == 0, "\(first)")
            check(SyncAPI.results(first).allSatisfy { $0["table"] as? String == t }, "\(first)")

            // Streaming: a create (bare), an update (wrapped), a delete and its Kafka tombstone
            // (bare null, then the converter's {"schema":null,"payload":null}).
            let streamed = Debezium.array([
                Debezium.postgres("c", table: t, after: created, lsn: 2_000, tsMs: ts + 1_000),
                Debezium.wrapped(Debezium.postgres("u", table: t, before: snap, after: updated, lsn: 3_000, tsMs: ts + 2_000)),
                Debezium.postgres("d", table: t, before: gone, lsn: 4_000, tsMs: ts + 3_000),
                Debezium.tombstone,
                Debezium.wrappedTombstone,
            ])
            let second = try await SyncAPI.apply(live, streamed, to: sync)
            #expect(SyncAPI.outcomes(second) == ["applied", "applied", "applied", "ignored", "ignored"], "\(second)")
            #expect(second["applied"] as? Int == 3 && second["ignored"] as? Int == 2 && second["dead_lettered"] as? Int == 0,
                    "\(second)")
            #expect(SyncAPI.results(second)[3]["table"] == nil, "a tombstone names no table: \(second)")

            let admin = sync.admin.accessToken
            let current = try await SyncAPI.read(live, "/api/v1/sync/\(t)/\(snapId)", bearer: admin)
            Self.expectRow(current, id: "\(snapId)", data: updated, position: Debezium.lsnText(3_000), ts: ts + 2_000, table: table)
            #expect(current["deleted"] == nil, "\(current)")
            let fresh = try await SyncAPI.read(live, "/api/v1/sync/\(t)/\(newId)", bearer: admin)
            Self.expectRow(fresh, id: "\(newId)", data: created, position: Debezium.lsnText(2_000), ts: ts + 1_000, table: table)

            // The deleted row answers as a tombstone that keeps the last image.
            let tombstone = try await SyncAPI.read(live, "/api/v1/sync/\(t)/\(goneId)", bearer: admin)
            #expect(tombstone["deleted"] as? Bool == true && tombstone["deleted_at"] is String, "\(tombstone)")
            #expect(tombstone["source_position"] as? String == Debezium.lsnText(4_000), "\(tombstone)")
            #expect(Debezium.sameJSON(tombstone["data"] as? [String: Any] ?? [:], gone), "\(tombstone)")

            // The list: live rows in id order; tombstones only on request.
            let list = try await SyncAPI.read(live, "/api/v1/sync/\(t)", bearer: admin)
            #expect(list["table"] as? String == t)
            check(SyncAPI.rows(list).map { $0["id"] as? String } == ["\(snapId)", "\(newId)"], "\(list)")
            let all = try await SyncAPI.read(live, "/api/v1/sync/\(t)?include_deleted=true", bearer: admin)
            check(SyncAPI.rows(all).map { $0["id"] as? String } == ["\(snapId)", "\(newId)", "\(goneId)"], "\(all)")
            check(SyncAPI.rows(all).map { $0["deleted"] as? Bool ?? false } == [false, false, true], "\(all)")

            // What the table generated from the row, read from the database.
            let record = try #require(try await SyncSQL.record(live, table, id: "\(snapId)"))
            for column in Debezium.typedColumns(table) {
                #expect("\(record[column] ?? "nil")" == "\(updated[column] ?? "absent")", "\(t).\(column): \(record)")
            }

            let state = try #require(try await SyncSQL.state(live, table))
            #expect(state == .init(applied: 5, skipped: 0, errors: 0, lastError: nil, lastPosition: Debezium.lsnText(4_000)),
                    "\(state)")
        }
    }

    @Test("the list pages by id with next_cursor; limit and cursor are validated")
    func paging() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let ids = ["b", "a", "e", "c", "d"]
            try await SyncAPI.apply(live, Debezium.array(ids.enumerated().map { n, id in
                Debezium.postgres("c", table: "products", after: Debezium.row(.products, id: id, n: n), lsn: Int64(100 + n),
                                  tsMs: Debezium.baseMs + Int64(n))
            }), to: sync)
            var seen: [String] = []
            var cursor: String?
            var pages = 0
            repeat {
                let page = try await SyncAPI.read(live, "/api/v1/sync/products?limit=2" + (cursor.map { "&cursor=\($0)" } ?? ""),
                                                  bearer: sync.admin.accessToken)
                let rows = SyncAPI.rows(page).compactMap { $0["id"] as? String }
                #expect(rows.count <= 2, "\(page)")
                seen += rows
                cursor = page["next_cursor"] as? String
                pages += 1
            } while cursor != nil && pages < 10
            #expect(seen == ids.sorted(), "every row once, in id order")
            #expect(pages == 3, "2 + 2 + 1")

            for query in ["limit=0", "limit=1001", "limit=x", "include_deleted=maybe", "cursor="] {
                let reply = try await live.get("/api/v1/sync/products?\(query)", bearer: sync.admin.accessToken)
                ValidationTests.expectError(reply, status: 422, code: "validation_failed", "?\(query)")
            }
            let unknown = try await live.get("/api/v1/sync/invoices", bearer: sync.admin.accessToken)
            ValidationTests.expectError(unknown, status: 404, code: "not_found", "an unknown table")
            let missing = try await live.get("/api/v1/sync/products/zzz", bearer: sync.admin.accessToken)
            ValidationTests.expectError(missing, status: 404, code: "not_found", "an unknown id")
        }
    }

    @Test("customers: location from latitude/longitude or a Debezium geometry struct, and the geofence radius")
    func customerLocation() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let wkb = try await SyncSQL.wkb(live, longitude: 13.3777, latitude: 52.5163)
            let plainWKB = try await SyncSQL.wkb(live, longitude: -0.1276, latitude: 51.5072, srid: nil)
            try await SyncAPI.apply(live, Debezium.array([
                Debezium.postgres("c", table: "customers", after: ["id": 1, "name": "Corner Shop", "latitude": 52.5163,
                                                                   "longitude": 13.3777, "geofence_radius_m": 80],
                                  lsn: 100, tsMs: Debezium.baseMs),
                // MySQL's connector sends a spatial column as {"wkb": base64, "srid"}; DECIMALs as strings.
                Debezium.mysql("c", table: "customers", after: ["id": 2, "name": "Depot", "location": ["wkb": wkb, "srid": 4326],
                                                                "geofence_radius_metres": "150.5"],
                               file: "mysql-bin.000003", pos: 400, tsMs: Debezium.baseMs),
                Debezium.mysql("c", table: "customers", after: ["id": 3, "name": "London", "location": ["wkb": plainWKB, "srid": NSNull()]],
                               file: "mysql-bin.000003", pos: 500, tsMs: Debezium.baseMs),
                Debezium.postgres("c", table: "customers", after: ["id": 4, "name": "Nowhere"], lsn: 200, tsMs: Debezium.baseMs),
            ]), to: sync)
            func location(_ id: Int) async throws -> (lat: Double?, lon: Double?, radius: Double?) {
                let row = try await SyncAPI.read(live, "/api/v1/sync/customers/\(id)", bearer: sync.admin.accessToken)
                let location = row["location"] as? [String: Any]
                return (location?["latitude"] as? Double, location?["longitude"] as? Double, row["geofence_radius_metres"] as? Double)
            }
            let shop = try await location(1)
            #expect(shop.lat == 52.5163 && shop.lon == 13.3777 && shop.radius == 80, "\(shop)")
            let depot = try await location(2)
            #expect(depot.lat == 52.5163 && depot.lon == 13.3777 && depot.radius == 150.5, "\(depot)")
            let london = try await location(3)
            #expect(london.lat == 51.5072 && london.lon == -0.1276 && london.radius == nil, "\(london)")
            let nowhere = try await location(4)
            #expect(nowhere.lat == nil && nowhere.radius == nil, "\(nowhere)")
            let mysqlRow = try await SyncAPI.read(live, "/api/v1/sync/customers/2", bearer: sync.admin.accessToken)
            #expect(mysqlRow["source_position"] as? String == "mysql-bin.000003:400:0", "\(mysqlRow)")
        }
    }

    /// The row a GET answered: its id, the source row, position and time.
    static func expectRow(_ row: [String: Any], id: String, data: [String: Any], position: String, ts: Int64, table: SyncTable,
                          sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(row["id"] as? String == id, "\(row)", sourceLocation: sourceLocation)
        #expect(Debezium.sameJSON(row["data"] as? [String: Any] ?? [:], data), "\(row)", sourceLocation: sourceLocation)
        #expect(row["source_position"] as? String == position, "\(row)", sourceLocation: sourceLocation)
        #expect(row["source_ts"] as? String == Debezium.iso(ts), "\(row)", sourceLocation: sourceLocation)
        #expect(row["applied_at"] is String, "\(row)", sourceLocation: sourceLocation)
        if table == .customers {
            let location = row["location"] as? [String: Any]
            let latitude = (location?["latitude"] as? Double ?? .nan) - (data["latitude"] as? Double ?? .nan)
            #expect(abs(latitude) < 1e-6, "\(row)", sourceLocation: sourceLocation)
            #expect(row["geofence_radius_metres"] as? Double == (data["geofence_radius_m"] as? Int).map(Double.init),
                    "\(row)", sourceLocation: sourceLocation)
        }
    }
}
