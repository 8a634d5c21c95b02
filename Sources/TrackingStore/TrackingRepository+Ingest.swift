import Foundation
import PostgresNIO
import TrackingCore

/// What an insert did: fixes accepted (stored, may move the marker) and filtered by the
/// tenant's filters (stored flagged, or dropped in 'drop' mode).
public struct IngestOutcome: Sendable, Equatable, Encodable {
    public var accepted: Int
    public var filtered: Int
    /// How many of the filtered were not stored ('drop' mode).
    public var dropped: Int
    /// Flagged fixes per filter reason.
    public var reasons: [String: Int]

    public init(accepted: Int, filtered: Int, dropped: Int, reasons: [String: Int] = [:]) {
        self.accepted = accepted
        self.filtered = filtered
        self.dropped = dropped
        self.reasons = reasons
    }

    static func + (a: IngestOutcome, b: IngestOutcome) -> IngestOutcome {
        IngestOutcome(accepted: a.accepted + b.accepted, filtered: a.filtered + b.filtered, dropped: a.dropped + b.dropped,
                      reasons: a.reasons.merging(b.reasons, uniquingKeysWith: +))
    }

    enum CodingKeys: String, CodingKey { case accepted, filtered, dropped, reasons = "filter_reasons" }
}

/// Who posts through a device protocol: one device (its API key), or a tenant's ingest key
/// (a server forwarding for many devices, each fix naming its device by unique id).
public enum IngestCaller: Sendable {
    case device(DeviceIdentity)
    case tenant(TenantID)

    public var tenant: TenantID {
        switch self {
        case .device(let device): return device.tenant
        case .tenant(let tenant): return tenant
        }
    }
}

/// Ingest keys: `pgi_` + 64 hex characters; only the SHA-256 is stored.
public enum IngestAPIKey {
    static let format = SecretToken(prefix: "pgi_")
    public static func generate() -> String { format.generate() }
    public static func looksValid(_ key: String) -> Bool { format.looksValid(key) }
}

/// The tenant's fix filters (SQL/035, README "Fix filters"). A nil threshold is off.
public struct FilterSettings: Sendable, Equatable, Codable {
    public var mode: String
    public var invalid: Bool
    public var zero: Bool
    public var duplicate: Bool
    public var futureSeconds: Double?
    public var pastSeconds: Double?
    public var accuracyMetres: Double?
    public var maxSpeed: Double?
    public var minPeriodSeconds: Double?
    public var jitterMetres: Double?
    public var stationarySpeed: Double
    public var skipLimitSeconds: Double?

    public init(mode: String = "flag", invalid: Bool = false, zero: Bool = false, duplicate: Bool = false,
                futureSeconds: Double? = nil, pastSeconds: Double? = nil, accuracyMetres: Double? = nil,
                maxSpeed: Double? = nil, minPeriodSeconds: Double? = nil, jitterMetres: Double? = nil,
                stationarySpeed: Double = 1, skipLimitSeconds: Double? = nil) {
        self.mode = mode
        self.invalid = invalid
        self.zero = zero
        self.duplicate = duplicate
        self.futureSeconds = futureSeconds
        self.pastSeconds = pastSeconds
        self.accuracyMetres = accuracyMetres
        self.maxSpeed = maxSpeed
        self.minPeriodSeconds = minPeriodSeconds
        self.jitterMetres = jitterMetres
        self.stationarySpeed = stationarySpeed
        self.skipLimitSeconds = skipLimitSeconds
    }

    enum CodingKeys: String, CodingKey {
        case mode, invalid, zero, duplicate, futureSeconds = "future_seconds", pastSeconds = "past_seconds"
        case accuracyMetres = "accuracy_metres", maxSpeed = "max_speed", minPeriodSeconds = "min_period_seconds"
        case jitterMetres = "jitter_metres", stationarySpeed = "stationary_speed", skipLimitSeconds = "skip_limit_seconds"
    }

    /// Nil thresholds are written as null, so a client sees every setting.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(mode, forKey: .mode)
        try container.encode(invalid, forKey: .invalid)
        try container.encode(zero, forKey: .zero)
        try container.encode(duplicate, forKey: .duplicate)
        try container.encode(futureSeconds, forKey: .futureSeconds)
        try container.encode(pastSeconds, forKey: .pastSeconds)
        try container.encode(accuracyMetres, forKey: .accuracyMetres)
        try container.encode(maxSpeed, forKey: .maxSpeed)
        try container.encode(minPeriodSeconds, forKey: .minPeriodSeconds)
        try container.encode(jitterMetres, forKey: .jitterMetres)
        try container.encode(stationarySpeed, forKey: .stationarySpeed)
        try container.encode(skipLimitSeconds, forKey: .skipLimitSeconds)
    }
}

extension TrackingRepository {
    // MARK: Device protocols

    /// Stores fixes decoded from a device protocol, all or nothing, through the same insert as
    /// `POST /api/v1/locations` (one statement per device). Each fix goes to the device its
    /// unique id names in the caller's tenant; a device key may only name its own device, and
    /// its batch may not mix Traccar deviceIds (refused before anything is written).
    public func ingest(_ fixes: [ProtocolFix], as caller: IngestCaller) async throws -> IngestOutcome {
        if case .device = caller { try ProtocolFix.requireOneSourceDevice(fixes) }
        return try await withTenant(caller.tenant) { connection in
            let devices = try await resolve(fixes.map(\.uniqueID), as: caller, on: connection)
            var order: [UUID] = []
            var batches: [UUID: [ValidatedPosition]] = [:]
            for (fix, device) in zip(fixes, devices) {
                if batches[device] == nil { order.append(device) }
                batches[device, default: []].append(fix.position)
            }
            var outcome = IngestOutcome(accepted: 0, filtered: 0, dropped: 0)
            for device in order {
                outcome = outcome + (try await insertPositions(batches[device] ?? [], device: device, tenant: caller.tenant,
                                                               on: connection))
            }
            return outcome
        }
    }

    /// Stores a device event and logs it as `device_event` (pushed like every change). Returns its seq.
    public func logDeviceEvent(_ event: ProtocolEvent, as caller: IngestCaller) async throws -> Int64 {
        try await withTenant(caller.tenant) { connection in
            guard let device = try await resolve([event.uniqueID], as: caller, on: connection).first else {
                throw APIError(status: 500, code: "internal", message: "no device resolved")
            }
            var payload: [String: JSONValue] = [
                "device_id": .string(device.uuidString.lowercased()),
                "event_type": .string(event.type),
                "event_time": .string(Timestamp.format(event.eventTime)),
                "attributes": .object(event.attributes),
            ]
            if let position = event.position { payload["position"] = .object(position) }
            let json = String(decoding: try JSONEncoder().encode(payload), as: UTF8.self)
            let attributes = String(decoding: try JSONEncoder().encode(event.attributes), as: UTF8.self)
            let position = try event.position.map { String(decoding: try JSONEncoder().encode($0), as: UTF8.self) }
            // to_timestamp(float8) rounds to the microsecond, as the positions inserts do; a bound
            // Date is truncated (PostgresNIO), which can store .317999 for a sent .318.
            let rows = try await connection.query("""
                WITH logged AS (
                    SELECT pgtrack_log_event(\(caller.tenant.rawValue), 'device_event', \(device), NULL, \(json)::jsonb) AS seq
                )
                INSERT INTO device_events (tenant_id, device_id, type, event_time, attributes, position, seq)
                SELECT \(caller.tenant.rawValue), \(device), \(event.type), to_timestamp(\(event.eventTime.timeIntervalSince1970)),
                       \(attributes)::jsonb, \(position)::jsonb, logged.seq
                  FROM logged
                RETURNING seq
                """, logger: logger)
            for try await seq in rows.decode(Int64.self) { return seq }
            throw APIError(status: 500, code: "internal", message: "the event was not logged")
        }
    }

    /// The device of each unique id (nil: the caller's own device). 404 for an id no device of
    /// the tenant has; 403 when a device key names another device.
    private func resolve(_ uniqueIDs: [DeviceUniqueID?], as caller: IngestCaller,
                         on connection: PostgresConnection) async throws -> [UUID] {
        switch caller {
        case .device(let device):
            return try uniqueIDs.map { named in
                guard let named, named != device.uniqueID else { return device.id }
                if device.uniqueID == nil {
                    throw APIError.forbidden("""
                        This API key belongs to device \(device.id.uuidString.lowercased()), which has no unique id; \
                        it cannot post for '\(named)'. Set the device's unique_id to '\(named)' (PATCH /api/v1/devices/{id}).
                        """)
                }
                throw APIError.forbidden("This API key belongs to the device with unique id '\(device.uniqueID!)'; it cannot post for '\(named)'.")
            }
        case .tenant(let tenant):
            let wanted = Array(Set(uniqueIDs.compactMap { $0?.rawValue }))
            guard uniqueIDs.allSatisfy({ $0 != nil }) else {
                throw APIError.invalid("uniqueId: is required for every fix posted with an ingest key (it names the device).",
                                       field: "uniqueId", index: uniqueIDs.firstIndex(where: { $0 == nil }))
            }
            let rows = try await connection.query("""
                SELECT unique_id, id FROM devices WHERE tenant_id = \(tenant.rawValue) AND unique_id = ANY(\(wanted))
                """, logger: logger)
            var known: [String: UUID] = [:]
            for try await (uniqueID, id) in rows.decode((String, UUID).self) { known[uniqueID] = id }
            return try uniqueIDs.map { named in
                guard let named, let id = known[named.rawValue] else {
                    throw APIError.notFound("No device with unique id '\(named?.rawValue ?? "")' in this tenant; "
                        + "an admin sets it with `pgtrack admin create-device --unique-id` or PATCH /api/v1/devices/{id}.")
                }
                return id
            }
        }
    }

    /// Sets (or clears) a device's unique id. Nil when the tenant has no such device; 409 when
    /// another device of the tenant has it.
    public func setUniqueID(_ uniqueID: DeviceUniqueID?, device id: UUID, tenant: TenantID) async throws -> Bool? {
        do {
            return try await changingKeys(of: tenant) { connection in
                let rows = try await connection.query("""
                    UPDATE devices SET unique_id = \(uniqueID?.rawValue) WHERE id = \(id) AND tenant_id = \(tenant.rawValue) RETURNING 1
                    """, logger: logger)
                var found: Bool?
                for try await _ in rows { found = true }
                return found
            }
        } catch let error as PSQLError where error.sqlState == "23505" {
            throw APIError.conflict("another device of tenant \(tenant) already has unique id '\(uniqueID?.rawValue ?? "")'")
        }
    }

    // MARK: Ingest keys

    /// Creates an ingest key for the tenant; the key is returned once. Nil when no such tenant.
    public func createIngestKey(tenant: TenantID, name: String) async throws -> (id: UUID, apiKey: String)? {
        let key = IngestAPIKey.generate()
        let rows = try await client.query("""
            INSERT INTO ingest_api_keys (tenant_id, name, key_hash)
            SELECT id, \(name), \(ByteBuffer(bytes: SecretToken.hash(key))) FROM tenants WHERE id = \(tenant.rawValue)
            RETURNING id
            """, logger: logger)
        for try await id in rows.decode(UUID.self) { return (id, key) }
        return nil
    }

    /// The tenant an ingest key belongs to, or nil for an unknown or revoked key.
    public func authenticateIngestKey(_ key: String) async throws -> TenantID? {
        guard IngestAPIKey.looksValid(key) else { return nil }
        let hash = SecretToken.hash(key)
        let rows = try await client.query("""
            SELECT key_hash, tenant_id FROM ingest_api_keys WHERE key_hash = \(ByteBuffer(bytes: hash)) AND revoked_at IS NULL
            """, logger: logger)
        for try await (stored, tenant) in rows.decode((ByteBuffer, String).self) {
            guard DeviceAPIKey.constantTimeEqual(Array(buffer: stored), hash) else { return nil }
            return TenantID(tenant)
        }
        return nil
    }

    // MARK: Filter settings

    public func filterSettings(tenant: TenantID) async throws -> FilterSettings? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT pgtrack_filter_settings_json(t)::text FROM tenants t WHERE t.id = \(tenant.rawValue)
                """, logger: logger)
            var settings: FilterSettings?
            for try await json in rows.decode(String.self) {
                settings = try JSONDecoder().decode(FilterSettings.self, from: Data(json.utf8))
            }
            return settings
        }
    }

    /// Stores new settings (the caller validated them); they apply to the next insert.
    public func updateFilterSettings(_ settings: FilterSettings, tenant: TenantID) async throws {
        do {
            try await withTenant(tenant) { connection in
                _ = try await connection.query("""
                    UPDATE tenants SET filter_mode = \(settings.mode), filter_invalid = \(settings.invalid),
                           filter_zero = \(settings.zero), filter_duplicate = \(settings.duplicate),
                           filter_future_seconds = \(settings.futureSeconds), filter_past_seconds = \(settings.pastSeconds),
                           filter_accuracy_metres = \(settings.accuracyMetres), filter_max_speed = \(settings.maxSpeed),
                           filter_min_period_seconds = \(settings.minPeriodSeconds),
                           filter_jitter_metres = \(settings.jitterMetres), filter_stationary_speed = \(settings.stationarySpeed),
                           filter_skip_limit_seconds = \(settings.skipLimitSeconds)
                     WHERE id = \(tenant.rawValue)
                    """, logger: logger)
            }
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw APIError.invalid("a filter setting is out of range: \(error.serverMessage)", field: nil, index: nil)
        }
    }
}
