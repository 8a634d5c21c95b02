import Foundation
import PostgresNIO
import TrackingCore

/// A user as the API shows it (never the password hash).
public struct UserRecord: Sendable, Equatable {
    public let id: UUID
    public let tenant: TenantID
    public let email: String
    public let name: String
    public let role: Role
    /// The driver's device.
    public let deviceID: UUID?
    /// Nil: the whole tenant (for roles that read the tenant).
    public let scope: VisibilityScope?
    public let scopeVersion: Int64
    public let createdAt: Date
}

/// What a new user is made of; the password is already hashed (bcrypt).
public struct NewUser: Sendable {
    public let email: String
    public let name: String
    public let role: Role
    public let passwordHash: String
    public let deviceID: UUID?
    public let scope: VisibilityScope?

    public init(email: String, name: String, role: Role, passwordHash: String, deviceID: UUID?, scope: VisibilityScope?) {
        self.email = email
        self.name = name
        self.role = role
        self.passwordHash = passwordHash
        self.deviceID = deviceID
        self.scope = scope
    }
}

extension TrackingRepository {
    static let userColumns = "id, tenant_id, email, name, role, device_id, scope::text, scope_version, created_at"
    private typealias UserRow = (UUID, String, String, String, String, UUID?, String?, Int64, Date)

    private static func record(_ row: UserRow) throws -> UserRecord {
        let (id, tenant, email, name, role, device, scopeText, version, created) = row
        guard let tenantID = TenantID(tenant), let role = Role(rawValue: role) else {
            throw APIError(status: 500, code: "internal", message: "user \(id) has an invalid tenant or role")
        }
        var scope: VisibilityScope?
        if let scopeText {
            let value = try JSONDecoder().decode(JSONValue.self, from: Data(scopeText.utf8))
            scope = try VisibilityScope(json: value)
        }
        return UserRecord(id: id, tenant: tenantID, email: email, name: name, role: role, deviceID: device,
                          scope: scope, scopeVersion: version, createdAt: created)
    }

    func users(_ query: PostgresQuery, on connection: PostgresConnection) async throws -> [UserRecord] {
        var users: [UserRecord] = []
        for try await row in try await connection.query(query, logger: logger).decode(UserRow.self) {
            users.append(try Self.record(row))
        }
        return users
    }

    private static func scopeText(_ scope: VisibilityScope?) throws -> String? {
        try scope.map { String(decoding: try JSONEncoder().encode($0.json), as: UTF8.self) }
    }

    public func createUser(_ user: NewUser, tenant: TenantID) async throws -> UserRecord {
        let scope = try Self.scopeText(user.scope)
        do {
            return try await withTenant(tenant) { connection in
                let created = try await users("""
                    INSERT INTO users (tenant_id, email, name, role, password_hash, device_id, scope)
                    VALUES (\(tenant.rawValue), \(user.email), \(user.name), \(user.role.rawValue), \(user.passwordHash),
                            \(user.deviceID), \(scope)::jsonb)
                    RETURNING id, tenant_id, email, name, role, device_id, scope::text, scope_version, created_at
                    """, on: connection)
                guard let record = created.first else { throw APIError(status: 500, code: "internal", message: "user insert returned no row") }
                return record
            }
        } catch let error as PSQLError where error.sqlState == "23505" {
            throw APIError(status: 409, code: "conflict", message: "a user with email \(user.email) already exists in this tenant")
        } catch let error as PSQLError where error.sqlState == "23503" && error.constraint?.contains("device") == true {
            throw APIError.invalid("device_id is not a device of this tenant", field: "device_id", index: nil)
        } catch let error as PSQLError where error.sqlState == "23503" || error.sqlState == "42501" {
            // The tenant row is missing (or invisible to this tenant's policy): it does not exist.
            throw APIError.notFound("tenant \(tenant) does not exist; create it first with `pgtrack admin create-tenant`")
        }
    }

    /// The user with this email in `tenant` and their password hash, for login.
    public func credentials(email: String, tenant: TenantID) async throws -> (UserRecord, passwordHash: String)? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT \(unescaped: Self.userColumns), password_hash FROM users
                 WHERE tenant_id = \(tenant.rawValue) AND email = \(email)
                """, logger: logger)
            var found: (UserRecord, passwordHash: String)?
            for try await (id, t, e, n, r, d, s, v, c, hash) in rows.decode((UUID, String, String, String, String, UUID?, String?, Int64, Date, String).self) {
                found = (try Self.record((id, t, e, n, r, d, s, v, c)), hash)
            }
            return found
        }
    }

    public func user(_ id: UUID, tenant: TenantID) async throws -> UserRecord? {
        try await withTenant(tenant) { connection in try await user(id, tenant: tenant, on: connection) }
    }

    func user(_ id: UUID, tenant: TenantID, on connection: PostgresConnection) async throws -> UserRecord? {
        try await users("SELECT \(unescaped: Self.userColumns) FROM users WHERE id = \(id) AND tenant_id = \(tenant.rawValue)",
                        on: connection).first
    }

    public func users(tenant: TenantID) async throws -> [UserRecord] {
        try await withTenant(tenant) { connection in
            try await users("SELECT \(unescaped: Self.userColumns) FROM users WHERE tenant_id = \(tenant.rawValue) ORDER BY created_at, id",
                            on: connection)
        }
    }

    /// Sets (or with nil clears) a user's scope. The trigger bumps `scope_version` and rings the
    /// user's channel, so their open sessions apply it at once. Nil when there is no such user.
    public func setScope(_ scope: VisibilityScope?, user id: UUID, tenant: TenantID) async throws -> UserRecord? {
        let text = try Self.scopeText(scope)
        return try await withTenant(tenant) { connection in
            try await users("""
                UPDATE users SET scope = \(text)::jsonb WHERE id = \(id) AND tenant_id = \(tenant.rawValue)
                RETURNING id, tenant_id, email, name, role, device_id, scope::text, scope_version, created_at
                """, on: connection).first
        }
    }

    /// Deletes a user (their refresh tokens go with them; open sessions end). False when missing.
    public func deleteUser(_ id: UUID, tenant: TenantID) async throws -> Bool {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("DELETE FROM users WHERE id = \(id) AND tenant_id = \(tenant.rawValue) RETURNING 1",
                                                  logger: logger)
            var deleted = false
            for try await _ in rows { deleted = true }
            return deleted
        }
    }
}
