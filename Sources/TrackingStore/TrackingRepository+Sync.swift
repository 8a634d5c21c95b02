import Foundation
import NIOCore
import PostgresNIO
import TrackingCore

/// The sync tables a change event can feed.
public enum SyncTable: String, Sendable, CaseIterable {
    case accounts, customers, products, orders, users
}

/// What a bad change event does to its batch.
public enum SyncErrorMode: String, Sendable {
    /// The batch is one transaction: a bad event fails it, nothing is applied.
    case fail
    /// A bad event goes to sync.dead_letters with its reason; the others are applied.
    case deadLetter = "dead_letter"
}

/// A change event that could not be applied, in a batch that failed as a whole.
public struct SyncEventRejected: Error, Sendable {
    /// The event's position in the batch; nil when the batch failed before any event was read.
    public let index: Int?
    public let message: String
}

/// Sync API keys: `pgs_` + 64 hex characters; only the SHA-256 is stored. They may post change
/// events for their tenant and nothing else.
public enum SyncAPIKey {
    private static let format = SecretToken(prefix: "pgs_")

    public static func generate() -> String { format.generate() }
    public static func looksValid(_ key: String) -> Bool { format.looksValid(key) }
}

extension TrackingRepository {
    // MARK: Applying changes

    /// Applies `eventsJSON` (one Debezium envelope, an array of them, or null) in one
    /// transaction. Returns `{"applied","skipped","ignored","dead_lettered","results":[…]}`.
    /// In `.fail` mode a bad event throws `SyncEventRejected` and nothing is applied; its error
    /// is still counted in sync_state (in a transaction of its own).
    public func applySyncChanges(_ eventsJSON: String, tenant: TenantID, mode: SyncErrorMode) async throws -> String {
        do {
            return try await withTenant(tenant) { connection in
                let rows = try await connection.query("""
                    SELECT jsonb_build_object(
                               'applied', count(*) FILTER (WHERE outcome = 'applied'),
                               'skipped', count(*) FILTER (WHERE outcome = 'skipped'),
                               'ignored', count(*) FILTER (WHERE outcome = 'ignored'),
                               'dead_lettered', count(*) FILTER (WHERE outcome = 'dead_lettered'),
                               'results', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                                   'index', index, 'outcome', outcome, 'table', target_table, 'error', error))
                                   ORDER BY index), '[]'))::text
                      FROM pgtrack_sync_apply_batch(\(tenant.rawValue), \(eventsJSON)::jsonb, \(mode == .deadLetter))
                    """, logger: logger)
                for try await json in rows.decode(String.self) { return json }
                return "{}"
            }
        } catch let error as PSQLError where error.sqlState?.hasPrefix("22") == true || error.sqlState?.hasPrefix("23") == true {
            let message = error.serverInfo?[.message] ?? "the event could not be applied"
            let rejected = Self.rejection(message)
            if let index = rejected.index {
                try? await recordSyncError(eventsJSON, index: index, message: rejected.message, tenant: tenant)
            }
            throw rejected
        }
    }

    /// "event 3: op: is required" → index 3 and the reason. Any other message (the body was not
    /// jsonb, say) names no event.
    static func rejection(_ message: String) -> SyncEventRejected {
        guard message.hasPrefix("event "), let colon = message.firstIndex(of: ":"),
              let index = Int(message[message.index(message.startIndex, offsetBy: 6)..<colon])
        else { return SyncEventRejected(index: nil, message: message) }
        return SyncEventRejected(index: index, message: String(message[message.index(after: colon)...].drop { $0 == " " }))
    }

    /// Counts a failed batch's bad event against the table it was meant for, when that is known.
    private func recordSyncError(_ eventsJSON: String, index: Int, message: String, tenant: TenantID) async throws {
        _ = try await withTenant(tenant) { connection in
            try await connection.query("""
                WITH e AS (
                    SELECT CASE WHEN jsonb_typeof(b) = 'array' THEN b -> \(Int32(clamping: index)) ELSE b END AS event
                      FROM (SELECT \(eventsJSON)::jsonb AS b) x
                ), t AS (
                    SELECT coalesce(event #>> '{payload,source,table}', event #>> '{source,table}') AS source_table FROM e
                )
                SELECT pgtrack_sync_count(\(tenant.rawValue), target, NULL, NULL, NULL, 0, 0, 1, \(message))
                  FROM (SELECT coalesce((SELECT m.target_table FROM sync.table_mappings m
                                          WHERE m.tenant_id = \(tenant.rawValue) AND m.source_table = t.source_table),
                                        CASE WHEN t.source_table = ANY (pgtrack_sync_tables()) THEN t.source_table END) AS target
                          FROM t) m
                 WHERE target IS NOT NULL
                """, logger: logger)
        }
    }

    // MARK: Reading

    /// One page of a sync table in id order, after `cursor` (an id), as `{"table","rows","next_cursor"}`.
    public func syncRows(_ table: SyncTable, tenant: TenantID, after cursor: String?, limit: Int, includeDeleted: Bool) async throws -> String {
        try await withTenant(tenant) { connection in
            // The table name comes from SyncTable, never from the request.
            let rows = try await connection.query("""
                SELECT jsonb_build_object(
                           'table', \(table.rawValue)::text,
                           'rows', coalesce(jsonb_agg(pgtrack_sync_row_json(to_jsonb(r)) ORDER BY r.id)
                                            FILTER (WHERE r.id IS NOT NULL), '[]'),
                           'next_cursor', CASE WHEN count(r.id) = \(limit) THEN max(r.id) END)::text
                  FROM (SELECT * FROM sync.\(unescaped: table.rawValue) r
                         WHERE r.tenant_id = \(tenant.rawValue) AND (\(cursor)::text IS NULL OR r.id > \(cursor))
                           AND (\(includeDeleted) OR NOT r.deleted)
                         ORDER BY r.id LIMIT \(limit)) r
                """, logger: logger)
            for try await json in rows.decode(String.self) { return json }
            return "{}"
        }
    }

    /// One row of a sync table by its source id (tombstones included: `deleted` says so), or nil.
    public func syncRow(_ table: SyncTable, id: String, tenant: TenantID) async throws -> String? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT pgtrack_sync_row_json(to_jsonb(r))::text FROM sync.\(unescaped: table.rawValue) r
                 WHERE r.tenant_id = \(tenant.rawValue) AND r.id = \(id)
                """, logger: logger)
            for try await json in rows.decode(String.self) { return json }
            return nil
        }
    }

    /// Replication lag per table as `{"status": worst, "tables": […]}`.
    public func syncLag(tenant: TenantID) async throws -> String {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT jsonb_build_object(
                           'status', pgtrack_sync_worst(array_agg(status)),
                           'thresholds_seconds', jsonb_build_object('warning', 2, 'degraded', 5, 'critical', 10),
                           'tables', jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                               'table', table_name, 'lag_seconds', round(lag_seconds::numeric, 3)::float8, 'status', status,
                               'last_source_ts', pgtrack_iso_time(last_source_ts), 'last_source_position', last_source_position,
                               'last_applied_at', pgtrack_iso_time(last_applied_at), 'events_applied', events_applied,
                               'events_skipped', events_skipped, 'errors', errors, 'last_error', last_error,
                               'last_error_at', pgtrack_iso_time(last_error_at)))))::text
                  FROM pgtrack_sync_lag(\(tenant.rawValue))
                """, logger: logger)
            for try await json in rows.decode(String.self) { return json }
            return "{}"
        }
    }

    /// Per table: rows, tombstones and sync state; the mappings; how many dead letters.
    public func syncStatus(tenant: TenantID) async throws -> String {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT jsonb_build_object(
                    'tables', (SELECT jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                                   'table', l.table_name, 'rows', c.live, 'deleted', c.dead, 'status', l.status,
                                   'last_source_ts', pgtrack_iso_time(l.last_source_ts),
                                   'last_source_position', l.last_source_position,
                                   'last_applied_at', pgtrack_iso_time(l.last_applied_at),
                                   'events_applied', l.events_applied, 'events_skipped', l.events_skipped,
                                   'errors', l.errors, 'last_error', l.last_error)))
                                 FROM pgtrack_sync_lag(\(tenant.rawValue)) l
                                 CROSS JOIN LATERAL pgtrack_sync_counts(\(tenant.rawValue), l.table_name) c),
                    'mappings', (SELECT coalesce(jsonb_agg(jsonb_build_object('source_table', source_table,
                                     'target_table', target_table, 'key_column', key_column) ORDER BY source_table), '[]')
                                   FROM sync.table_mappings WHERE tenant_id = \(tenant.rawValue)),
                    'dead_letters', (SELECT count(*) FROM sync.dead_letters WHERE tenant_id = \(tenant.rawValue)))::text
                """, logger: logger)
            for try await json in rows.decode(String.self) { return json }
            return "{}"
        }
    }

    /// Dead letters, newest first, before `beforeID`, as `{"dead_letters":[…],"next_cursor"}`.
    public func syncDeadLetters(tenant: TenantID, before beforeID: Int64?, limit: Int) async throws -> String {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT jsonb_build_object(
                           'dead_letters', coalesce(jsonb_agg(jsonb_strip_nulls(jsonb_build_object(
                               'id', id, 'received_at', pgtrack_iso_time(received_at), 'source_table', source_table,
                               'table', target_table, 'reason', reason)) || jsonb_build_object('event', event) ORDER BY id DESC), '[]'),
                           'next_cursor', CASE WHEN count(*) = \(limit) THEN min(id)::text END)::text
                  FROM (SELECT * FROM sync.dead_letters
                         WHERE tenant_id = \(tenant.rawValue) AND (\(beforeID)::bigint IS NULL OR id < \(beforeID))
                         ORDER BY id DESC LIMIT \(limit)) d
                """, logger: logger)
            for try await json in rows.decode(String.self) { return json }
            return "{}"
        }
    }

    // MARK: Mappings

    /// Replaces the tenant's source-table mappings.
    public func replaceSyncMappings(_ mappings: [(source: String, target: SyncTable, key: String)], tenant: TenantID) async throws {
        try await withTenant(tenant) { connection in
            try await connection.query("DELETE FROM sync.table_mappings WHERE tenant_id = \(tenant.rawValue)", logger: logger)
            for mapping in mappings {
                try await connection.query("""
                    INSERT INTO sync.table_mappings (tenant_id, source_table, target_table, key_column)
                    VALUES (\(tenant.rawValue), \(mapping.source), \(mapping.target.rawValue), \(mapping.key))
                    """, logger: logger)
            }
        }
    }

    // MARK: Keys

    /// Creates a sync API key for the tenant; the key is returned once. Nil when no such tenant.
    public func createSyncKey(tenant: TenantID, name: String) async throws -> (id: UUID, apiKey: String)? {
        let key = SyncAPIKey.generate()
        let rows = try await client.query("""
            INSERT INTO sync.api_keys (tenant_id, name, key_hash)
            SELECT id, \(name), \(ByteBuffer(bytes: SecretToken.hash(key))) FROM tenants WHERE id = \(tenant.rawValue)
            RETURNING id
            """, logger: logger)
        for try await id in rows.decode(UUID.self) { return (id, key) }
        return nil
    }

    /// The tenant a sync key belongs to, or nil for an unknown key.
    public func authenticateSyncKey(_ key: String) async throws -> TenantID? {
        guard SyncAPIKey.looksValid(key) else { return nil }
        let hash = SecretToken.hash(key)
        let rows = try await client.query("""
            SELECT key_hash, tenant_id FROM sync.api_keys WHERE key_hash = \(ByteBuffer(bytes: hash))
            """, logger: logger)
        for try await (stored, tenant) in rows.decode((ByteBuffer, String).self) {
            guard DeviceAPIKey.constantTimeEqual(Array(buffer: stored), hash) else { return nil }
            return TenantID(tenant)
        }
        return nil
    }

    // MARK: Node-wide upkeep

    /// Logs each tenant's `cdc_lag` event unless another node did within `period`; returns how many.
    @discardableResult
    public func logSyncLag(period: Duration) async throws -> Int {
        let seconds = Double(period.components.seconds) + Double(period.components.attoseconds) / 1e18
        let rows = try await client.query("""
            SELECT pgtrack_sync_log_lag(make_interval(secs => \(seconds * 0.9)))
            """, logger: logger)
        for try await logged in rows.decode(Int.self) { return logged }
        return 0
    }

    /// Forgets tombstones older than each tenant's sync_tombstone_days; returns how many.
    @discardableResult
    public func forgetSyncTombstones() async throws -> Int64 {
        let rows = try await client.query("SELECT pgtrack_sync_forget_tombstones()", logger: logger)
        for try await count in rows.decode(Int64.self) { return count }
        return 0
    }

    /// The worst lag status over every tenant's synced tables ('no_data' when none), for /health.
    public func worstSyncLag() async throws -> (status: String, tables: Int) {
        let rows = try await client.query("""
            SELECT pgtrack_sync_worst(array_agg(l.status)), count(*) FILTER (WHERE l.status <> 'no_data')
              FROM (SELECT DISTINCT tenant_id FROM sync.sync_state) s
              CROSS JOIN LATERAL pgtrack_sync_lag(s.tenant_id) l
            """, logger: logger)
        for try await (status, tables) in rows.decode((String, Int).self) { return (status, tables) }
        return ("no_data", 0)
    }
}
