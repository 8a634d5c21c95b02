import Foundation
import Logging
import PostgresNIO
import TrackingCore

/// A consistent picture of a stream: the latest position of each device as of `seq`, each
/// with its audience so a caller can keep only what a subscriber may see.
public struct Snapshot: Sendable, Equatable {
    public struct Entry: Sendable, Equatable {
        public let audience: EventAudience
        /// The position as JSON (with its `seq`).
        public let json: String
    }

    public let seq: Int64
    public let entries: [Entry]

    public init(seq: Int64, entries: [Entry]) {
        self.seq = seq
        self.entries = entries
    }

    /// The positions `filter` allows, as a JSON array.
    public func positionsJSON(_ filter: StreamFilter) -> String {
        var json = "["
        var first = true
        for entry in entries where filter.allows(entry.audience) {
            if !first { json += "," }
            json += entry.json
            first = false
        }
        return json + "]"
    }
}

/// How far back a tenant's change log reaches: seqs in `(prunedThrough, lastSeq]` are readable.
public struct LogBounds: Sendable, Equatable {
    public let prunedThrough: Int64
    public let lastSeq: Int64

    public func canResume(after seq: Int64) -> Bool { seq >= prunedThrough && seq <= lastSeq }
}

/// The fixes one request posts for one device (a unit of the ingest group commit).
public struct PositionGroup: Sendable {
    public let tenant: TenantID
    public let device: UUID
    public let positions: [ValidatedPosition]

    public init(tenant: TenantID, device: UUID, positions: [ValidatedPosition]) {
        self.tenant = tenant
        self.device = device
        self.positions = positions
    }
}

/// Every query the service runs. Routes and services call these; no SQL lives elsewhere in Swift.
///
/// Tenant-owned data is read and written inside `withTenant`: a transaction that assumes the
/// `pgtrack_tenant` role and sets the tenant, so row-level security hides every other tenant's
/// rows even from a query that forgot its tenant filter. Only lookups that discover the tenant
/// (an API key or a refresh token), node-wide work (partitions, health) and the REST ingest's
/// group commit (several tenants in one statement, SQL/036_ingest.sql) run without it.
///
/// Inside a transaction every result is read to its end before the next statement: a row stream
/// left half-read would hold the connection that the next statement (or COMMIT) needs.
public struct TrackingRepository: Sendable {
    public let client: PostgresClient
    let logger: Logger
    /// False for the node's own readers (the notification listener): they read the change log of
    /// the tenant they name, on the hot path of every push, in one round trip instead of a
    /// four-statement transaction. Everything a request triggers runs with it on.
    let rowLevelSecurity: Bool
    /// The serving node's memory of API keys; nil (every lookup asks the database) for the
    /// command-line tools, which run no listener to keep one fresh.
    public let deviceKeys: DeviceKeyCache?

    public init(client: PostgresClient, logger: Logger, rowLevelSecurity: Bool = true, deviceKeys: DeviceKeyCache? = nil) {
        self.client = client
        self.logger = logger
        self.rowLevelSecurity = rowLevelSecurity
        self.deviceKeys = deviceKeys
    }

    /// The same repository for node-internal readers, without the per-transaction tenant role.
    public var asNode: TrackingRepository {
        TrackingRepository(client: client, logger: logger, rowLevelSecurity: false, deviceKeys: deviceKeys)
    }

    /// Runs `body` in a transaction restricted to `tenant` by row-level security.
    func withTenant<T: Sendable>(_ tenant: TenantID, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        guard rowLevelSecurity else {
            return try await client.withConnection { connection in
                do {
                    return try await body(connection)
                } catch let unusable as UnusableConnection {
                    try? await connection.close()  // as `transaction` does, with no transaction to end
                    throw unusable.underlying
                }
            }
        }
        return try await transaction { connection in
            try await assumeTenant(tenant, on: connection)
            return try await body(connection)
        }
    }

    /// Restricts the rest of the current transaction to `tenant`: the role that row-level
    /// security binds, and the tenant its policies compare with. Both end with the transaction.
    func assumeTenant(_ tenant: TenantID, on connection: PostgresConnection) async throws {
        try await connection.query("""
            SELECT set_config('role', 'pgtrack_tenant', true), set_config('pgtrack.tenant', \(tenant.rawValue), true)
            """, logger: logger)
    }

    /// A transaction whose failure is the error that caused it (a PSQLError the caller can map
    /// to a status), not PostgresNIO's wrapper around it.
    /// A connection that can no longer run a prepared statement (`executeHot`) is closed after
    /// the ROLLBACK, before the pool gets it back.
    func transaction<T: Sendable>(_ body: (PostgresConnection) async throws -> T) async throws -> T {
        try await client.withConnection { connection in
            do {
                return try await connection.withTransaction(logger: logger) { connection in try await body(connection) }
            } catch let error as PostgresTransactionError {
                let cause = error.closureError ?? error.beginError ?? error.commitError ?? error
                guard let unusable = cause as? UnusableConnection else { throw cause }
                try? await connection.close()
                throw unusable.underlying
            }
        }
    }

    // MARK: Tenants

    public func createTenant(id: TenantID, name: String) async throws {
        do {
            try await client.query("INSERT INTO tenants (id, name) VALUES (\(id.rawValue), \(name))", logger: logger)
        } catch let error as PSQLError where error.sqlState == "23505" {
            throw APIError(status: 409, code: "conflict", message: "tenant \(id) already exists")
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw APIError.invalid("name must be 1–200 characters", field: "name", index: nil)
        }
    }

    // MARK: Positions

    /// Inserts a batch for one device in one statement (so one transaction and one trigger run).
    /// The trigger judges the fixes by the tenant's filters, logs, upserts latest_positions and
    /// notifies. Returns how many were accepted and filtered.
    public func insertPositions(_ positions: [ValidatedPosition], device: DeviceIdentity) async throws -> IngestOutcome {
        try await insertPositionGroups([PositionGroup(tenant: device.tenant, device: device.id, positions: positions)])[0]
    }

    /// The insert itself, in the caller's transaction; database refusals become 4xx errors.
    @discardableResult
    func insertPositions(_ positions: [ValidatedPosition], device: UUID, tenant: TenantID,
                         on connection: PostgresConnection) async throws -> IngestOutcome {
        let json = try Self.rowsJSON([(device, positions, nil)])
        var ids: [Int64] = []
        var filtering = false
        try await Self.mappingInsertErrors(device: device) {
            let inserted = try await connection.query("""
                INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location,
                                       speed, heading, altitude, accuracy, battery, attributes)
                SELECT \(tenant.rawValue), p.device, p.booking_id, to_timestamp(p.t),
                       ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
                       p.speed, p.heading, p.altitude, p.accuracy, p.battery, p.attributes
                  FROM ROWS FROM (jsonb_to_recordset(\(json)::jsonb) AS (
                           device uuid, lat float8, lon float8, t float8, speed float8, heading float8, altitude float8,
                           accuracy float8, battery float8, booking_id text, attributes jsonb))
                       WITH ORDINALITY AS p(device, lat, lon, t, speed, heading, altitude, accuracy, battery,
                                            booking_id, attributes, ord)
                 ORDER BY p.ord
                RETURNING id, (SELECT pgtrack_filters_enabled(t) FROM tenants t WHERE t.id = \(tenant.rawValue))
                """, logger: logger)
            for try await (id, enabled) in inserted.decode((Int64, Bool?).self) {
                ids.append(id)
                filtering = filtering || enabled == true
            }
        }
        // Without filters every row was accepted: no second round trip on the common path.
        guard filtering else { return IngestOutcome(accepted: ids.count, filtered: 0, dropped: 0) }
        return try await judged(ids, device: device, tenant: tenant, between: positions.map(\.fixTime), on: connection)
    }

    /// The positions of several devices, of any tenants, in one statement and one implicit
    /// transaction (pgtrack_ingest_positions): one round trip and one commit for all of them.
    /// All or nothing. Returns each group's outcome, in order; only for tenants that filter
    /// fixes does it read back how they were judged. With one group, a device the database
    /// refuses (deleted meanwhile) is named in the error.
    public func insertPositionGroups(_ groups: [PositionGroup]) async throws -> [IngestOutcome] {
        guard rowLevelSecurity else {
            return try await client.withConnection { connection in
                var outcomes: [IngestOutcome] = []
                for group in groups {
                    outcomes.append(try await insertPositions(group.positions, device: group.device, tenant: group.tenant, on: connection))
                }
                return outcomes
            }
        }
        let json = try Self.rowsJSON(groups.map { ($0.device, $0.positions, $0.tenant) })
        let (ids, filtering) = try await Self.mappingInsertErrors(device: groups.count == 1 ? groups[0].device : nil) {
            try await executeHot(IngestPositions(rowsJSON: json)).last ?? ([], [])
        }
        guard !filtering.isEmpty else { return groups.map { IngestOutcome(accepted: $0.positions.count, filtered: 0, dropped: 0) } }
        let judging = Set(filtering)
        // The ids come in input order: each group's are the next `positions.count` of them.
        return try await client.withConnection { connection in
            var outcomes: [IngestOutcome] = []
            var offset = 0
            for group in groups {
                let own = Array(ids[offset..<min(offset + group.positions.count, ids.count)])
                offset += group.positions.count
                guard judging.contains(group.tenant.rawValue) else {
                    outcomes.append(IngestOutcome(accepted: own.count, filtered: 0, dropped: 0))
                    continue
                }
                outcomes.append(try await judged(own, device: group.device, tenant: group.tenant,
                                                 between: group.positions.map(\.fixTime), on: connection))
            }
            return outcomes
        }
    }

    /// Database refusals of a positions insert as 4xx errors.
    static func mappingInsertErrors<T>(device: UUID?, _ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as PSQLError where error.sqlState == "23514" && error.serverMessage.contains("no partition") {
            // No partition for the fix time: outside the window kept ahead/behind. Nothing was written.
            throw APIError.invalid("timestamp: no stored day covers it; fixes must fall in the partition window", field: "timestamp", index: nil)
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw APIError.invalid("a value is out of range: \(error.serverMessage)", field: nil, index: nil)
        } catch let error as PSQLError where error.sqlState == "22P05" || error.sqlState == "22P02" {
            throw APIError.invalid("a value cannot be stored: \(error.serverMessage)", field: nil, index: nil)
        } catch let error as PSQLError where error.sqlState == "23503" {
            throw APIError.unauthorized("device \(device.map { "\($0)" } ?? "") no longer exists")
        }
    }

    /// The rows as the JSON array the inserts read with jsonb_to_recordset.
    static func rowsJSON(_ groups: [(device: UUID, positions: [ValidatedPosition], tenant: TenantID?)]) throws -> String {
        var rows: [[String: JSONValue]] = []
        rows.reserveCapacity(groups.reduce(0) { $0 + $1.positions.count })
        for group in groups {
            let device = JSONValue.string(group.device.uuidString.lowercased())
            for position in group.positions {
                var row: [String: JSONValue] = [
                    "device": device,
                    "lat": .number(position.latitude), "lon": .number(position.longitude),
                    "t": .number(position.fixTime.timeIntervalSince1970),
                    "attributes": .object(position.attributes),
                ]
                if let value = position.speed { row["speed"] = .number(value) }
                if let value = position.heading { row["heading"] = .number(value) }
                if let value = position.altitude { row["altitude"] = .number(value) }
                if let value = position.accuracy { row["accuracy"] = .number(value) }
                if let value = position.battery { row["battery"] = .number(value) }
                if let value = position.bookingID { row["booking_id"] = .string(value.rawValue) }
                if let tenant = group.tenant { row["tenant"] = .string(tenant.rawValue) }
                rows.append(row)
            }
        }
        return String(decoding: try JSONEncoder().encode(rows), as: UTF8.self)
    }

    /// How the trigger judged the rows just inserted: flagged rows carry filter_reason, dropped
    /// ones are gone. Found by (device, fix time) index, the partition key bounding the search.
    func judged(_ ids: [Int64], device: UUID, tenant: TenantID, between times: [Date],
                on connection: PostgresConnection) async throws -> IngestOutcome {
        guard let first = times.min(), let last = times.max() else { return IngestOutcome(accepted: 0, filtered: 0, dropped: 0) }
        let rows = try await connection.query("""
            SELECT count(*) FILTER (WHERE filter_reason IS NULL)::int, count(*) FILTER (WHERE filter_reason IS NOT NULL)::int,
                   coalesce(jsonb_object_agg(filter_reason, n) FILTER (WHERE filter_reason IS NOT NULL), '{}')::text
              FROM (SELECT filter_reason, count(*) OVER (PARTITION BY filter_reason) AS n FROM positions
                     WHERE device_id = \(device) AND tenant_id = \(tenant.rawValue)
                       AND fix_time BETWEEN \(first.addingTimeInterval(-1)) AND \(last.addingTimeInterval(1)) AND id = ANY(\(ids))) p
            """, logger: logger)
        var outcome = IngestOutcome(accepted: 0, filtered: 0, dropped: 0)
        for try await (accepted, flagged, reasons) in rows.decode((Int, Int, String).self) {
            let counts = (try? JSONDecoder().decode([String: Int].self, from: Data(reasons.utf8))) ?? [:]
            outcome = IngestOutcome(accepted: accepted, filtered: flagged + (ids.count - accepted - flagged),
                                    dropped: ids.count - accepted - flagged, reasons: counts)
        }
        return outcome
    }

    /// The latest position of a device of `tenant` (primary-key lookup), as JSON.
    public func latestPosition(device: UUID, tenant: TenantID) async throws -> (audience: EventAudience, json: String)? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT d.group_name, d.grade,
                       (jsonb_build_object('seq', lp.seq) || pgtrack_position_json(lp.device_id, lp.booking_id,
                        lp.fix_time, lp.received_at, lp.location, lp.speed, lp.heading, lp.altitude, lp.accuracy,
                        lp.battery, lp.attributes))::text
                  FROM latest_positions lp JOIN devices d ON d.id = lp.device_id
                 WHERE lp.device_id = \(device) AND lp.tenant_id = \(tenant.rawValue)
                """, logger: logger)
            var found: (audience: EventAudience, json: String)?
            for try await (group, grade, json) in rows.decode((String, Int, String).self) {
                found = (EventAudience(device: device, group: group, grade: grade), json)
            }
            return found
        }
    }

    /// Creates the daily partitions of positions for `daysBack` days before today to `daysAhead` after.
    @discardableResult
    public func ensurePositionPartitions(daysBack: Int, daysAhead: Int) async throws -> Int {
        let rows = try await client.query(
            "SELECT pgtrack_ensure_position_partitions(\(daysBack)::integer, \(daysAhead)::integer)", logger: logger)
        for try await created in rows.decode(Int.self) { return created }
        return 0
    }

    // MARK: Streams

    /// Latest positions of a topic with the seq they are consistent with: one statement, so
    /// one MVCC snapshot; every event after `seq` is not in it and every one up to it is.
    /// Nil when the tenant does not exist. A user topic has no positions.
    public func snapshot(of topic: BusTopic) async throws -> Snapshot? {
        try await withTenant(topic.tenant) { connection in
            let rows: PostgresRowSequence
            switch topic {
            case .admin(let tenant):
                // Admin rooms carry no positions: only the head the stream opens at.
                rows = try await connection.query("""
                    SELECT last_seq, NULL::uuid, NULL::text, NULL::int4, NULL::text
                      FROM change_log_heads WHERE tenant_id = \(tenant.rawValue)
                    """, logger: logger)
            case .tenant(let tenant), .user(let tenant, _):
                rows = try await connection.query("""
                    SELECT h.last_seq, lp.device_id, d.group_name, d.grade,
                           (jsonb_build_object('seq', lp.seq) || pgtrack_position_json(lp.device_id,
                            lp.booking_id, lp.fix_time, lp.received_at, lp.location, lp.speed, lp.heading,
                            lp.altitude, lp.accuracy, lp.battery, lp.attributes))::text
                      FROM change_log_heads h
                      LEFT JOIN latest_positions lp ON lp.tenant_id = h.tenant_id
                      LEFT JOIN devices d ON d.id = lp.device_id
                     WHERE h.tenant_id = \(tenant.rawValue)
                     ORDER BY lp.device_id
                    """, logger: logger)
            case .booking(let tenant, let booking):
                // Prepared: its plan covers every day partition of positions, and planning it
                // afresh took ~21 ms per booking stream opened (pg_stat_statements).
                return Self.snapshot(from: try await executeHot(
                    BookingSnapshot(tenant: tenant.rawValue, booking: booking.rawValue), on: connection))
            }
            var collected: [SnapshotRow] = []
            for try await row in rows.decode(SnapshotRow.self) { collected.append(row) }
            return Self.snapshot(from: collected)
        }
    }

    /// A snapshot query's rows: the head, then per device (none when the head has no position
    /// joined) its audience and JSON.
    typealias SnapshotRow = (Int64, UUID?, String?, Int?, String?)

    private static func snapshot(from rows: [SnapshotRow]) -> Snapshot? {
        var seq: Int64?
        var entries: [Snapshot.Entry] = []
        for (head, device, group, grade, json) in rows {
            seq = head
            if let device, let group, let grade, let json {
                entries.append(.init(audience: EventAudience(device: device, group: group, grade: grade), json: json))
            }
        }
        return seq.map { Snapshot(seq: $0, entries: entries) }
    }

    public func logBounds(tenant: TenantID) async throws -> LogBounds? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT pruned_through, last_seq FROM change_log_heads WHERE tenant_id = \(tenant.rawValue)
                """, logger: logger)
            var bounds: LogBounds?
            for try await (pruned, last) in rows.decode((Int64, Int64).self) {
                bounds = LogBounds(prunedThrough: pruned, lastSeq: last)
            }
            return bounds
        }
    }

    /// Events of `topic` with seq > `after` (and <= `through` when given), oldest first.
    /// A user topic has no events in the log.
    public func readLog(_ topic: BusTopic, after: Int64, through: Int64? = nil, limit: Int = 1_000) async throws -> [ChangeEvent] {
        let upper = through ?? Int64.max
        let bookingFilter: String?
        switch topic {
        case .tenant, .admin: bookingFilter = nil
        case .booking(_, let booking): bookingFilter = booking.rawValue
        case .user: return []
        }
        // Admin kinds go to the admin topic only, everything else never does.
        let admin: Bool = if case .admin = topic { true } else { false }
        return try await withTenant(topic.tenant) { connection in
            let rows = try await connection.query("""
                SELECT seq, kind, payload::text, device_id, device_group, device_grade, route_id FROM change_log
                 WHERE tenant_id = \(topic.tenant.rawValue) AND seq > \(after) AND seq <= \(upper)
                   AND (\(bookingFilter)::text IS NULL OR booking_id = \(bookingFilter))
                   AND (kind = ANY (pgtrack_admin_kinds())) = \(admin)
                 ORDER BY seq LIMIT \(limit)
                """, logger: logger)
            var events: [ChangeEvent] = []
            for try await (seq, kind, json, device, group, grade, route) in rows.decode((Int64, String, String, UUID?, String?, Int?, UUID?).self) {
                let audience = device.map { EventAudience(device: $0, group: group ?? "", grade: grade ?? 0, route: route) }
                events.append(ChangeEvent(seq: seq, kind: kind, json: json, audience: audience))
            }
            return events
        }
    }

    // MARK: Health


    public func notificationQueueUsage() async throws -> Double {
        let rows = try await client.query("SELECT pg_notification_queue_usage()", logger: logger)
        for try await usage in rows.decode(Double.self) { return usage }
        return 0
    }
}
