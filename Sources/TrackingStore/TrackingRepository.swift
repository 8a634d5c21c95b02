import Foundation
import Logging
import PostgresNIO
import TrackingCore

/// A device as authenticated by its API key.
public struct DeviceIdentity: Sendable, Equatable {
    public let id: UUID
    public let tenant: TenantID
    public let name: String
    public let group: String
    public let grade: Int
}

/// A consistent picture of a stream: the positions as of `seq`, as a JSON array.
public struct Snapshot: Sendable, Equatable {
    public let seq: Int64
    public let positionsJSON: String
}

/// How far back a tenant's change log reaches: seqs in `(prunedThrough, lastSeq]` are readable.
public struct LogBounds: Sendable, Equatable {
    public let prunedThrough: Int64
    public let lastSeq: Int64

    public func canResume(after seq: Int64) -> Bool { seq >= prunedThrough && seq <= lastSeq }
}

/// Every query the service runs. Routes and services call these; no SQL lives elsewhere in Swift.
public struct TrackingRepository: Sendable {
    public let client: PostgresClient
    let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    // MARK: Tenants and devices

    public func createTenant(id: TenantID, name: String) async throws {
        do {
            try await client.query("INSERT INTO tenants (id, name) VALUES (\(id.rawValue), \(name))", logger: logger)
        } catch let error as PSQLError where error.sqlState == "23505" {
            throw APIError(status: 409, code: "conflict", message: "tenant \(id) already exists")
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw APIError.invalid("name must be 1–200 characters", field: "name", index: nil)
        }
    }

    /// Creates a device and returns it with its API key, which is shown once and stored hashed.
    public func createDevice(tenant: TenantID, name: String, group: String, grade: Int) async throws -> (DeviceIdentity, apiKey: String) {
        let key = DeviceAPIKey.generate()
        let hash = DeviceAPIKey.hash(key)
        do {
            let rows = try await client.query("""
                INSERT INTO devices (tenant_id, name, group_name, grade, api_key_hash)
                VALUES (\(tenant.rawValue), \(name), \(group), \(grade), \(ByteBuffer(bytes: hash)))
                RETURNING id
                """, logger: logger)
            for try await id in rows.decode(UUID.self) {
                return (DeviceIdentity(id: id, tenant: tenant, name: name, group: group, grade: grade), key)
            }
        } catch let error as PSQLError where error.sqlState == "23503" {
            throw APIError.notFound("tenant \(tenant) does not exist; create it first with `pgtrack admin create-tenant`")
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw APIError.invalid("name and group must be 1–200 / 1–100 characters and grade 0–1000: \(error.serverMessage)", field: nil, index: nil)
        }
        throw APIError(status: 500, code: "internal", message: "device insert returned no id")
    }

    public func authenticateDevice(apiKey: String) async throws -> DeviceIdentity? {
        guard DeviceAPIKey.looksValid(apiKey) else { return nil }
        let hash = ByteBuffer(bytes: DeviceAPIKey.hash(apiKey))
        let rows = try await client.query("""
            SELECT id, tenant_id, name, group_name, grade FROM devices WHERE api_key_hash = \(hash)
            """, logger: logger)
        for try await (id, tenant, name, group, grade) in rows.decode((UUID, String, String, String, Int).self) {
            guard let tenantID = TenantID(tenant) else { return nil }
            return DeviceIdentity(id: id, tenant: tenantID, name: name, group: group, grade: grade)
        }
        return nil
    }

    // MARK: Positions

    /// Inserts a batch for one device in one statement (so one transaction and one trigger run).
    /// The trigger logs, upserts latest_positions and notifies. Returns the number stored.
    public func insertPositions(_ positions: [ValidatedPosition], device: DeviceIdentity) async throws -> Int {
        let rows = positions.map { position -> [String: JSONValue] in
            var row: [String: JSONValue] = [
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
            return row
        }
        let json = String(decoding: try JSONEncoder().encode(rows), as: UTF8.self)
        do {
            let result = try await client.query("""
                INSERT INTO positions (tenant_id, device_id, booking_id, fix_time, location,
                                       speed, heading, altitude, accuracy, battery, attributes)
                SELECT \(device.tenant.rawValue), \(device.id), p.booking_id, to_timestamp(p.t),
                       ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
                       p.speed, p.heading, p.altitude, p.accuracy, p.battery, p.attributes
                  FROM ROWS FROM (jsonb_to_recordset(\(json)::jsonb) AS (
                           lat float8, lon float8, t float8, speed float8, heading float8, altitude float8,
                           accuracy float8, battery float8, booking_id text, attributes jsonb))
                       WITH ORDINALITY AS p(lat, lon, t, speed, heading, altitude, accuracy, battery,
                                            booking_id, attributes, ord)
                 ORDER BY p.ord
                """, logger: logger)
            for try await _ in result {}
            return positions.count
        } catch let error as PSQLError where error.sqlState == "23514" && error.serverMessage.contains("no partition") {
            // No partition for the fix time: outside the window kept ahead/behind. Nothing was written.
            throw APIError.invalid("timestamp: no stored day covers it; fixes must fall in the partition window", field: "timestamp", index: nil)
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw APIError.invalid("a value is out of range: \(error.serverMessage)", field: nil, index: nil)
        } catch let error as PSQLError where error.sqlState == "22P05" || error.sqlState == "22P02" {
            throw APIError.invalid("a value cannot be stored: \(error.serverMessage)", field: nil, index: nil)
        } catch let error as PSQLError where error.sqlState == "23503" {
            throw APIError.unauthorized("device \(device.id) no longer exists")
        }
    }

    /// The latest position of a device of `tenant` (primary-key lookup), as JSON.
    public func latestPosition(device: UUID, tenant: TenantID) async throws -> String? {
        let rows = try await client.query("""
            SELECT (jsonb_build_object('seq', seq) || pgtrack_position_json(device_id, booking_id, fix_time,
                    received_at, location, speed, heading, altitude, accuracy, battery, attributes))::text
              FROM latest_positions WHERE device_id = \(device) AND tenant_id = \(tenant.rawValue)
            """, logger: logger)
        for try await json in rows.decode(String.self) { return json }
        return nil
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
    public func snapshot(of topic: BusTopic) async throws -> Snapshot? {
        let rows: PostgresRowSequence
        switch topic {
        case .tenant(let tenant):
            rows = try await client.query("""
                SELECT h.last_seq, coalesce((
                    SELECT jsonb_agg(jsonb_build_object('seq', lp.seq) || pgtrack_position_json(lp.device_id,
                               lp.booking_id, lp.fix_time, lp.received_at, lp.location, lp.speed, lp.heading,
                               lp.altitude, lp.accuracy, lp.battery, lp.attributes) ORDER BY lp.device_id)
                      FROM latest_positions lp WHERE lp.tenant_id = h.tenant_id), '[]'::jsonb)::text
                  FROM change_log_heads h WHERE h.tenant_id = \(tenant.rawValue)
                """, logger: logger)
        case .booking(let tenant, let booking):
            rows = try await client.query("""
                SELECT h.last_seq, coalesce((
                    SELECT jsonb_agg(j ORDER BY d) FROM (
                        SELECT DISTINCT ON (p.device_id) p.device_id AS d,
                               pgtrack_position_json(p.device_id, p.booking_id, p.fix_time, p.received_at,
                                   p.location, p.speed, p.heading, p.altitude, p.accuracy, p.battery,
                                   p.attributes) AS j
                          FROM positions p
                         WHERE p.tenant_id = h.tenant_id AND p.booking_id = \(booking.rawValue)
                         ORDER BY p.device_id, p.fix_time DESC, p.id DESC) latest), '[]'::jsonb)::text
                  FROM change_log_heads h WHERE h.tenant_id = \(tenant.rawValue)
                """, logger: logger)
        }
        for try await (seq, json) in rows.decode((Int64, String).self) {
            return Snapshot(seq: seq, positionsJSON: json)
        }
        return nil
    }

    public func logBounds(tenant: TenantID) async throws -> LogBounds? {
        let rows = try await client.query("""
            SELECT pruned_through, last_seq FROM change_log_heads WHERE tenant_id = \(tenant.rawValue)
            """, logger: logger)
        for try await (pruned, last) in rows.decode((Int64, Int64).self) {
            return LogBounds(prunedThrough: pruned, lastSeq: last)
        }
        return nil
    }

    /// Events of `topic` with seq > `after` (and <= `through` when given), oldest first.
    public func readLog(_ topic: BusTopic, after: Int64, through: Int64? = nil, limit: Int = 1_000) async throws -> [ChangeEvent] {
        let upper = through ?? Int64.max
        let rows: PostgresRowSequence
        switch topic {
        case .tenant(let tenant):
            rows = try await client.query("""
                SELECT seq, kind, payload::text FROM change_log
                 WHERE tenant_id = \(tenant.rawValue) AND seq > \(after) AND seq <= \(upper)
                 ORDER BY seq LIMIT \(limit)
                """, logger: logger)
        case .booking(let tenant, let booking):
            rows = try await client.query("""
                SELECT seq, kind, payload::text FROM change_log
                 WHERE tenant_id = \(tenant.rawValue) AND booking_id = \(booking.rawValue)
                   AND seq > \(after) AND seq <= \(upper)
                 ORDER BY seq LIMIT \(limit)
                """, logger: logger)
        }
        var events: [ChangeEvent] = []
        for try await (seq, kind, json) in rows.decode((Int64, String, String).self) {
            events.append(ChangeEvent(seq: seq, kind: kind, json: json))
        }
        return events
    }

    // MARK: Health

    public func notificationQueueUsage() async throws -> Double {
        let rows = try await client.query("SELECT pg_notification_queue_usage()", logger: logger)
        for try await usage in rows.decode(Double.self) { return usage }
        return 0
    }
}
