import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Debezium change events as the PostgreSQL and MySQL connectors put them on Kafka (JSON
/// converter), so the sync tests feed what a real pipeline feeds.
enum Debezium {
    /// A fixed source instant (2024-11-19T07:06:40Z) that every fixture counts from.
    static let baseMs: Int64 = 1_732_000_000_000

    /// A PostgreSQL connector envelope (`schemas.enable=false`: the payload alone).
    static func postgres(_ op: String, table: String, before: [String: Any]? = nil, after: [String: Any]? = nil,
                         lsn: Int64, tsMs: Int64, txId: Int = 555, snapshot: String = "false") -> [String: Any] {
        let source: [String: Any] = [
            "version": "2.5.0.Final", "connector": "postgresql", "name": "dbserver1", "ts_ms": tsMs,
            "snapshot": snapshot, "db": "app", "sequence": "[\"\(max(lsn - 64, 0))\",\"\(lsn)\"]", "schema": "public",
            "table": table, "txId": txId, "lsn": lsn, "xmin": NSNull(),
        ]
        return envelope(op, before: before, after: after, source: source, tsMs: tsMs + 120)
    }

    /// A MySQL connector envelope: the binlog file, position and row, the GTID and server id
    /// (a failover to another server changes `serverID`; binlog positions restart there).
    static func mysql(_ op: String, table: String, before: [String: Any]? = nil, after: [String: Any]? = nil,
                      file: String, pos: Int64, row: Int = 0, tsMs: Int64, gtid: String? = nil,
                      serverID: Int = 223_344) -> [String: Any] {
        let source: [String: Any] = [
            "version": "2.5.0.Final", "connector": "mysql", "name": "mysql-server-1", "ts_ms": tsMs,
            "snapshot": "false", "db": "inventory", "sequence": NSNull(), "table": table, "server_id": serverID,
            "gtid": gtid.map { $0 as Any } ?? NSNull(), "file": file, "pos": pos, "row": row, "thread": 7, "query": NSNull(),
        ]
        return envelope(op, before: before, after: after, source: source, tsMs: tsMs + 80)
    }

    static func envelope(_ op: String, before: [String: Any]?, after: [String: Any]?, source: [String: Any],
                         tsMs: Int64) -> [String: Any] {
        ["op": op, "before": before ?? NSNull(), "after": after ?? NSNull(), "source": source, "ts_ms": tsMs,
         "transaction": NSNull()]
    }

    /// The same event with the JSON converter's schema (`schemas.enable=true`).
    static func wrapped(_ payload: [String: Any]) -> [String: Any] {
        let source = payload["source"] as? [String: Any] ?? [:]
        let name = "\(source["name"] ?? "dbserver1").\(source["schema"] ?? source["db"] ?? "public").\(source["table"] ?? "t")"
        let row: [String: Any] = ["type": "struct", "optional": true, "name": "\(name).Value",
                                  "fields": [["type": "string", "optional": false, "field": "id"]]]
        let schema: [String: Any] = [
            "type": "struct", "optional": false, "name": "\(name).Envelope", "version": 1,
            "fields": [
                row.merging(["field": "before"]) { $1 }, row.merging(["field": "after"]) { $1 },
                ["type": "struct", "optional": false, "name": "io.debezium.connector.postgresql.Source", "field": "source",
                 "fields": [["type": "int64", "optional": false, "field": "ts_ms"], ["type": "string", "optional": false, "field": "table"]]],
                ["type": "string", "optional": false, "field": "op"],
                ["type": "int64", "optional": true, "field": "ts_ms"],
            ],
        ]
        return ["schema": schema, "payload": payload]
    }

    /// A Kafka tombstone (the null value after a delete), bare and as the JSON converter writes it.
    static let tombstone = "null"
    static let wrappedTombstone = #"{"schema":null,"payload":null}"#

    static func json(_ value: Any) -> String {
        let data = try! JSONSerialization.data(withJSONObject: value, options: [.sortedKeys, .fragmentsAllowed])
        return String(decoding: data, as: UTF8.self)
    }

    /// A JSON array of events given as objects or as JSON text.
    static func array(_ events: [Any]) -> String {
        "[" + events.map { $0 as? String ?? json($0) }.joined(separator: ",") + "]"
    }

    /// The readable position pgtrack stores for a PostgreSQL LSN ("0/16E8F58").
    static func lsnText(_ lsn: Int64) -> String {
        String(lsn >> 32, radix: 16, uppercase: true) + "/" + String(lsn & 0xFFFF_FFFF, radix: 16, uppercase: true)
    }

    /// An ISO time as pgtrack answers it (milliseconds, Z). Built from whole seconds plus the
    /// milliseconds as an integer: a Double of ms/1000 can land just below and format 1 ms early.
    static func iso(_ ms: Int64) -> String {
        let seconds = Date(timeIntervalSince1970: Double(ms / 1000))
            .formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: false))
        return seconds.dropLast() + "." + String(format: "%03d", Int(ms % 1000)) + "Z"
    }

    /// Whether two JSON values are the same document (compared as sorted-key JSON text, so an
    /// Int and the NSNumber parsed from it compare equal).
    static func sameJSON(_ a: Any?, _ b: Any?) -> Bool {
        guard let a, let b else { return a == nil && b == nil }
        return json(a) == json(b)
    }

    /// A plausible row of each sync table, `n` varying every column.
    static func row(_ table: SyncTable, id: Any, n: Int) -> [String: Any] {
        switch table {
        case .accounts: return ["id": id, "name": "Account \(n)", "plan": "pro", "seats": 10 + n]
        case .customers:
            return ["id": id, "name": "Customer \(n)", "account_id": "acc-\(n % 3)", "latitude": 52.5 + Double(n) * 0.001,
                    "longitude": 13.4, "geofence_radius_m": 100 + n]
        case .products: return ["id": id, "name": "Product \(n)", "sku": "SKU-\(1000 + n)", "price": "19.\(n % 10)0"]
        case .orders: return ["id": id, "customer_id": "c-\(n % 4)", "status": n % 2 == 0 ? "open" : "shipped", "total_cents": 1_250 * n]
        case .users: return ["id": id, "name": "User \(n)", "email": "user\(n)@example.com", "active": n % 2 == 0]
        }
    }

    /// The typed columns a sync table generates from its row, as `row` fills them.
    static func typedColumns(_ table: SyncTable) -> [String] {
        switch table {
        case .accounts: return ["name"]
        case .customers: return ["name", "account_id"]
        case .products: return ["name", "sku"]
        case .orders: return ["customer_id", "status"]
        case .users: return ["name", "email"]
        }
    }
}

/// A tenant fed by a sync key, with an admin to read what it holds.
struct SyncTenant {
    let tenant: TenantID
    let syncKey: String
    let admin: TestUser

    var id: String { tenant.rawValue }

    static func create(_ live: LiveNode, id: String = "acme") async throws -> SyncTenant {
        let setup = try await TestTenant.create(live.repository, id: id)
        let key = try #require(try await live.repository.createSyncKey(tenant: setup.tenant, name: "debezium-\(id)"))
        return SyncTenant(tenant: setup.tenant, syncKey: key.apiKey, admin: try await live.user(.admin, in: setup.tenant))
    }
}

/// The sync endpoints as a Debezium HTTP sink calls them.
enum SyncAPI {
    static func post(_ live: LiveNode, _ json: String, apiKey: String? = nil, bearer: String? = nil,
                     onError: String? = nil) async throws -> LiveNode.Reply {
        try await live.post("/api/v1/sync/changes" + (onError.map { "?on_error=\($0)" } ?? ""), apiKey: apiKey, bearer: bearer, json: json)
    }

    /// Posts changes with the tenant's sync key and requires a 200; returns the answer.
    @discardableResult
    static func apply(_ live: LiveNode, _ json: String, to sync: SyncTenant, onError: String? = nil,
                      sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String: Any] {
        let reply = try await post(live, json, apiKey: sync.syncKey, onError: onError)
        try #require(reply.status == 200, "POST /api/v1/sync/changes: \(reply.status) \(reply.body.prefix(400))",
                     sourceLocation: sourceLocation)
        return try reply.object()
    }

    static func results(_ answer: [String: Any]) -> [[String: Any]] { answer["results"] as? [[String: Any]] ?? [] }
    static func outcomes(_ answer: [String: Any]) -> [String] { results(answer).map { $0["outcome"] as? String ?? "?" } }

    /// A 200 JSON object from a GET, or a recorded failure.
    static func read(_ live: LiveNode, _ path: String, apiKey: String? = nil, bearer: String? = nil,
                     sourceLocation: SourceLocation = #_sourceLocation) async throws -> [String: Any] {
        let reply = try await live.get(path, apiKey: apiKey, bearer: bearer)
        try #require(reply.status == 200, "GET \(path): \(reply.status) \(reply.body.prefix(400))", sourceLocation: sourceLocation)
        return try reply.object()
    }

    static func rows(_ page: [String: Any]) -> [[String: Any]] { page["rows"] as? [[String: Any]] ?? [] }

    /// A table of GET /api/v1/sync/lag or /status by name.
    static func table(_ name: SyncTable, in document: [String: Any]) -> [String: Any] {
        (document["tables"] as? [[String: Any]] ?? []).first { $0["table"] as? String == name.rawValue } ?? [:]
    }
}

/// Reads the sync schema directly (as the superuser: no row-level security in the way).
enum SyncSQL {
    /// A stored row: everything but applied_at.
    struct Row: Equatable, CustomStringConvertible {
        let id: String
        let data: String
        let deleted: Bool
        let position: String?
        let sourceTs: Date

        var description: String { "\(id)\(deleted ? " (deleted)" : ""): \(data) @\(position ?? "-")" }
    }

    static func rows(_ live: LiveNode, _ table: SyncTable, tenant: String) async throws -> [Row] {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            let query: PostgresQuery = """
                SELECT id, data::text, deleted, source_position_text, source_ts FROM sync.\(unescaped: table.rawValue)
                 WHERE tenant_id = \(tenant) ORDER BY id
                """
            var rows: [Row] = []
            for try await (id, data, deleted, position, ts) in try await connection.query(query, logger: TestCluster.logger)
                .decode((String, String, Bool, String?, Date).self) {
                rows.append(Row(id: id, data: data, deleted: deleted, position: position, sourceTs: ts))
            }
            return rows
        }
    }

    /// One row as `to_jsonb` sees it (typed columns included), or nil.
    static func record(_ live: LiveNode, _ table: SyncTable, id: String, tenant: String = "acme") async throws -> [String: Any]? {
        let text: String? = try await scalar(live, """
            SELECT to_jsonb(r)::text FROM sync.\(unescaped: table.rawValue) r WHERE tenant_id = \(tenant) AND id = \(id)
            """)
        return text.flatMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    struct State: Equatable {
        var applied: Int64
        var skipped: Int64
        var errors: Int64
        var lastError: String?
        var lastPosition: String?
    }

    static func state(_ live: LiveNode, _ table: SyncTable, tenant: String = "acme") async throws -> State? {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            let query: PostgresQuery = """
                SELECT events_applied, events_skipped, errors, last_error, last_source_position_text
                  FROM sync.sync_state WHERE tenant_id = \(tenant) AND table_name = \(table.rawValue)
                """
            for try await (applied, skipped, errors, error, position) in try await connection.query(query, logger: TestCluster.logger)
                .decode((Int64, Int64, Int64, String?, String?).self) {
                return State(applied: applied, skipped: skipped, errors: errors, lastError: error, lastPosition: position)
            }
            return nil
        }
    }

    /// The first column of the first row of `query`, or nil when there is none.
    static func scalar<T: PostgresDecodable & Sendable>(_ live: LiveNode, _ query: PostgresQuery, as type: T.Type = T.self) async throws -> T?
        where T._DecodableType == T {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            for try await value in try await connection.query(query, logger: TestCluster.logger).decode(T?.self) {
                return value
            }
            return nil
        }
    }

    /// A base64 WKB/EWKB of a point, made by PostGIS itself.
    static func wkb(_ live: LiveNode, longitude: Double, latitude: Double, srid: Int? = 4326) async throws -> String {
        let value: String? = if let srid {
            try await scalar(live, "SELECT encode(ST_AsEWKB(ST_SetSRID(ST_MakePoint(\(longitude), \(latitude)), \(unescaped: String(srid)))), 'base64')")
        } else {
            try await scalar(live, "SELECT encode(ST_AsBinary(ST_MakePoint(\(longitude), \(latitude))), 'base64')")
        }
        return try #require(value)
    }
}

