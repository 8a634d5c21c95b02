import Foundation
import PostgresNIO
import TrackingCore

/// A device as authenticated by its API key.
public struct DeviceIdentity: Sendable, Equatable {
    public let id: UUID
    public let tenant: TenantID
    public let name: String
    public let group: String
    public let grade: Int
    /// What the device calls itself in device protocols (Traccar uniqueId, OsmAnd id).
    public let uniqueID: DeviceUniqueID?

    public var audience: EventAudience { EventAudience(device: id, group: group, grade: grade) }

    public init(id: UUID, tenant: TenantID, name: String, group: String, grade: Int, uniqueID: DeviceUniqueID? = nil) {
        self.id = id
        self.tenant = tenant
        self.name = name
        self.group = group
        self.grade = grade
        self.uniqueID = uniqueID
    }
}

/// A device as listed to an admin.
public struct DeviceRecord: Sendable, Equatable, Encodable {
    public let id: UUID
    public let name: String
    public let group: String
    public let grade: Int
    public let activeKeys: Int
    public let createdAt: Date
    public var uniqueID: String? = nil

    public var audience: EventAudience { EventAudience(device: id, group: group, grade: grade) }

    enum CodingKeys: String, CodingKey {
        case id = "device_id", name, group, grade, activeKeys = "active_keys", createdAt = "created_at", uniqueID = "unique_id"
    }

    /// Ids in lowercase, as in every event and position.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id.uuidString.lowercased(), forKey: .id)
        try container.encode(name, forKey: .name)
        try container.encode(group, forKey: .group)
        try container.encode(grade, forKey: .grade)
        try container.encode(activeKeys, forKey: .activeKeys)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(uniqueID, forKey: .uniqueID)
    }
}

/// An API key as listed: never the key itself, only its prefix and state.
public struct DeviceKeyRecord: Sendable, Equatable, Encodable {
    public let id: UUID
    public let prefix: String
    public let createdAt: Date
    public let revokedAt: Date?

    enum CodingKeys: String, CodingKey { case id = "key_id", prefix, createdAt = "created_at", revokedAt = "revoked_at" }

    /// Ids in lowercase; `revoked_at` is null while the key is active.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id.uuidString.lowercased(), forKey: .id)
        try container.encode(prefix, forKey: .prefix)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encode(revokedAt, forKey: .revokedAt)
    }
}

/// What removing a device's marker did.
public enum MarkerRemoval: Sendable, Equatable {
    case removed(seq: Int64)
    case noMarker
    case noDevice
}

extension TrackingRepository {
    // MARK: Devices

    /// Creates a device and its first API key, which is returned once and stored hashed.
    public func createDevice(tenant: TenantID, name: String, group: String, grade: Int,
                             uniqueID: DeviceUniqueID? = nil) async throws -> (DeviceIdentity, apiKey: String) {
        let key = DeviceAPIKey.generate()
        do {
            return try await withTenant(tenant) { connection in
                let rows = try await connection.query("""
                    INSERT INTO devices (tenant_id, name, group_name, grade, unique_id)
                    VALUES (\(tenant.rawValue), \(name), \(group), \(grade), \(uniqueID?.rawValue))
                    RETURNING id
                    """, logger: logger)
                var created: UUID?
                for try await id in rows.decode(UUID.self) { created = id }
                guard let id = created else { throw APIError(status: 500, code: "internal", message: "device insert returned no id") }
                try await insertKey(key, device: id, tenant: tenant, on: connection)
                return (DeviceIdentity(id: id, tenant: tenant, name: name, group: group, grade: grade, uniqueID: uniqueID), key)
            }
        } catch let error as PSQLError where error.sqlState == "23505" {
            throw APIError.conflict("another device of tenant \(tenant) already has unique id '\(uniqueID?.rawValue ?? "")'")
        } catch let error as PSQLError where error.sqlState == "23503" || error.sqlState == "42501" {
            // 42501: the tenant row is invisible, so the policy rejects the insert: it does not exist.
            throw APIError.notFound("tenant \(tenant) does not exist; create it first with `pgtrack admin create-tenant`")
        } catch let error as PSQLError where error.sqlState == "23514" {
            throw APIError.invalid("name and group must be 1–200 / 1–100 characters and grade 0–1000: \(error.serverMessage)", field: nil, index: nil)
        }
    }

    /// The tenant's devices (or just `only`), oldest first.
    public func devices(tenant: TenantID, only: UUID? = nil) async throws -> [DeviceRecord] {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT d.id, d.name, d.group_name, d.grade, d.created_at,
                       (SELECT count(*) FROM device_api_keys k WHERE k.device_id = d.id AND k.revoked_at IS NULL)::int,
                       d.unique_id
                  FROM devices d
                 WHERE d.tenant_id = \(tenant.rawValue) AND (\(only)::uuid IS NULL OR d.id = \(only))
                 ORDER BY d.created_at, d.id
                """, logger: logger)
            var devices: [DeviceRecord] = []
            for try await (id, name, group, grade, created, keys, uniqueID) in rows.decode((UUID, String, String, Int, Date, Int, String?).self) {
                devices.append(DeviceRecord(id: id, name: name, group: group, grade: grade, activeKeys: keys, createdAt: created,
                                            uniqueID: uniqueID))
            }
            return devices
        }
    }

    public func device(_ id: UUID, tenant: TenantID) async throws -> DeviceRecord? {
        try await devices(tenant: tenant, only: id).first
    }

    /// Deletes a device with its keys, marker and history; subscribers get `purged` first.
    /// False when the tenant has no such device.
    public func deleteDevice(_ id: UUID, tenant: TenantID) async throws -> Bool {
        try await changingKeys(of: tenant) { connection in
            guard try await lockDevice(id, tenant: tenant, on: connection) else { return false }
            try await connection.query("SELECT pgtrack_purge_device(\(tenant.rawValue), \(id))", logger: logger)
            try await connection.query("DELETE FROM devices WHERE id = \(id) AND tenant_id = \(tenant.rawValue)", logger: logger)
            return true
        }
    }

    /// Removes the device's latest marker (history kept) and pushes `removed`.
    public func removeMarker(device id: UUID, tenant: TenantID) async throws -> MarkerRemoval {
        try await withTenant(tenant) { connection in
            guard try await lockDevice(id, tenant: tenant, on: connection) else { return .noDevice }
            let rows = try await connection.query("SELECT pgtrack_remove_marker(\(tenant.rawValue), \(id))", logger: logger)
            var removed: Int64?
            for try await seq in rows.decode(Int64?.self) { removed = removed ?? seq }
            return removed.map { .removed(seq: $0) } ?? .noMarker
        }
    }

    /// Removes the device's marker and every stored position and pushes `purged`. Returns the
    /// number of positions deleted, or nil when the tenant has no such device.
    public func purgeDevice(_ id: UUID, tenant: TenantID) async throws -> Int64? {
        try await withTenant(tenant) { connection in
            guard try await lockDevice(id, tenant: tenant, on: connection) else { return nil }
            var seq: Int64?
            for try await logged in try await connection.query(
                "SELECT pgtrack_purge_device(\(tenant.rawValue), \(id))", logger: logger).decode(Int64.self) { seq = logged }
            let rows = try await connection.query("""
                SELECT (payload->>'positions_deleted')::bigint FROM change_log
                 WHERE tenant_id = \(tenant.rawValue) AND seq = \(seq)
                """, logger: logger)
            var deleted: Int64?
            for try await count in rows.decode(Int64.self) { deleted = count }
            if let deleted { return deleted }
            throw APIError(status: 500, code: "internal", message: "the purge logged no event")
        }
    }

    /// Locks the device row for the rest of the transaction; false when it is not the tenant's.
    private func lockDevice(_ id: UUID, tenant: TenantID, on connection: PostgresConnection) async throws -> Bool {
        let rows = try await connection.query("""
            SELECT 1 FROM devices WHERE id = \(id) AND tenant_id = \(tenant.rawValue) FOR UPDATE
            """, logger: logger)
        var found = false
        for try await _ in rows { found = true }
        return found
    }

    // MARK: API keys

    /// The device a key belongs to, or nil for an unknown or revoked key. Looked up by the
    /// key's SHA-256 (a unique index), then the stored hash is compared in constant time; a
    /// serving node remembers the answer (`DeviceKeyCache`: for as long as no change rings).
    public func authenticateDevice(apiKey: String) async throws -> DeviceIdentity? {
        guard DeviceAPIKey.looksValid(apiKey) else { return nil }
        let hash = DeviceAPIKey.hash(apiKey)
        if let remembered = deviceKeys?.device(forKeyHash: hash) { return remembered }
        let ticket = deviceKeys?.ticket()
        var found: DeviceIdentity?
        for (stored, id, tenant, name, group, grade, uniqueID) in try await executeHot(DeviceByKeyHash(keyHash: ByteBuffer(bytes: hash))) {
            guard DeviceAPIKey.constantTimeEqual(Array(buffer: stored), hash), let tenantID = TenantID(tenant) else { continue }
            found = DeviceIdentity(id: id, tenant: tenantID, name: name, group: group, grade: grade,
                                   uniqueID: uniqueID.flatMap(DeviceUniqueID.init))
        }
        if let found, let ticket { deviceKeys?.remember(found, forKeyHash: hash, ticket: ticket) }
        return found
    }

    /// Runs a change to the tenant's devices or keys; once it has committed, this node forgets
    /// the tenant's remembered keys at once, before the caller answers (other nodes hear the
    /// ring of SQL/041).
    func changingKeys<T: Sendable>(of tenant: TenantID, _ body: (PostgresConnection) async throws -> T) async throws -> T {
        defer { deviceKeys?.forget(tenant: tenant) }
        return try await withTenant(tenant, body)
    }

    /// Every key of a device, newest first; nil when the tenant has no such device.
    public func keys(device id: UUID, tenant: TenantID) async throws -> [DeviceKeyRecord]? {
        try await withTenant(tenant) { connection in
            guard try await lockDevice(id, tenant: tenant, on: connection) else { return nil }
            let rows = try await connection.query("""
                SELECT id, key_prefix, created_at, revoked_at FROM device_api_keys
                 WHERE device_id = \(id) AND tenant_id = \(tenant.rawValue) ORDER BY created_at DESC, id
                """, logger: logger)
            var keys: [DeviceKeyRecord] = []
            for try await (keyID, prefix, created, revoked) in rows.decode((UUID, String, Date, Date?).self) {
                keys.append(DeviceKeyRecord(id: keyID, prefix: prefix, createdAt: created, revokedAt: revoked))
            }
            return keys
        }
    }

    /// Issues a new key for a device (rotation). With `revokeOthers` every older key stops
    /// working in the same transaction. Nil when the tenant has no such device.
    public func createKey(device id: UUID, tenant: TenantID, revokeOthers: Bool) async throws -> (DeviceKeyRecord, apiKey: String)? {
        let key = DeviceAPIKey.generate()
        return try await changingKeys(of: tenant) { connection in
            guard try await lockDevice(id, tenant: tenant, on: connection) else { return nil }
            if revokeOthers {
                try await connection.query("""
                    UPDATE device_api_keys SET revoked_at = now()
                     WHERE device_id = \(id) AND tenant_id = \(tenant.rawValue) AND revoked_at IS NULL
                    """, logger: logger)
            }
            let record = try await insertKey(key, device: id, tenant: tenant, on: connection)
            return (record, key)
        }
    }

    /// Revokes one key. Nil when the tenant has no such device or key; false when it was already revoked.
    public func revokeKey(_ keyID: UUID, device id: UUID, tenant: TenantID) async throws -> Bool? {
        try await changingKeys(of: tenant) { connection in
            let rows = try await connection.query("""
                UPDATE device_api_keys SET revoked_at = coalesce(revoked_at, now())
                 WHERE id = \(keyID) AND device_id = \(id) AND tenant_id = \(tenant.rawValue)
                RETURNING revoked_at = now()
                """, logger: logger)
            var changed: Bool?
            for try await wasActive in rows.decode(Bool.self) { changed = wasActive }
            return changed
        }
    }

    @discardableResult
    private func insertKey(_ key: String, device id: UUID, tenant: TenantID, on connection: PostgresConnection) async throws -> DeviceKeyRecord {
        let rows = try await connection.query("""
            INSERT INTO device_api_keys (tenant_id, device_id, key_hash, key_prefix)
            VALUES (\(tenant.rawValue), \(id), \(ByteBuffer(bytes: DeviceAPIKey.hash(key))), \(DeviceAPIKey.displayPrefix(key)))
            RETURNING id, key_prefix, created_at
            """, logger: logger)
        for try await (keyID, prefix, created) in rows.decode((UUID, String, Date).self) {
            return DeviceKeyRecord(id: keyID, prefix: prefix, createdAt: created, revokedAt: nil)
        }
        throw APIError(status: 500, code: "internal", message: "key insert returned no row")
    }
}
