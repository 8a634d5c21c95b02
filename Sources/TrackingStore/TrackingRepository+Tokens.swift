import Foundation
import PostgresNIO
import TrackingCore

/// What presenting a refresh token did.
public enum RefreshOutcome: Sendable, Equatable {
    /// Valid: it is now used, and `user` gets a new token of the same family.
    case rotated(user: UserRecord, newToken: String)
    /// Already used once: presumed stolen, so its whole family was revoked.
    case reused
    /// Unknown, expired or revoked.
    case invalid
}

extension TrackingRepository {
    /// Stores a new refresh token (as its SHA-256) opening a new family: one login.
    public func issueRefreshToken(user: UserRecord, lifetime: Duration) async throws -> String {
        let token = RefreshToken.generate()
        try await withTenant(user.tenant) { connection in
            try await insertRefreshToken(token, family: UUID(), user: user, lifetime: lifetime, on: connection)
        }
        return token
    }

    /// Rotation with reuse detection, in one transaction. The token row is updated only while
    /// unused, so of two concurrent uses exactly one rotates and the other revokes the family.
    public func rotateRefreshToken(_ token: String, lifetime: Duration) async throws -> RefreshOutcome {
        guard RefreshToken.looksValid(token) else { return .invalid }
        let hash = ByteBuffer(bytes: RefreshToken.hash(token))
        // The tenant is what the token tells us, so this runs before any tenant is known.
        return try await transaction { connection in
            let claimed = try await connection.query("""
                UPDATE refresh_tokens SET used_at = now()
                 WHERE token_hash = \(hash) AND used_at IS NULL AND revoked_at IS NULL AND expires_at > now()
                RETURNING tenant_id, user_id, family_id
                """, logger: logger)
            var owner: (String, UUID, UUID)?
            for try await row in claimed.decode((String, UUID, UUID).self) { owner = row }
            guard let (tenantText, userID, family) = owner else {
                let revoked = try await connection.query("""
                    UPDATE refresh_tokens SET revoked_at = now()
                     WHERE revoked_at IS NULL AND family_id = (
                           SELECT family_id FROM refresh_tokens WHERE token_hash = \(hash) AND used_at IS NOT NULL)
                    RETURNING 1
                    """, logger: logger)
                var reused = false
                for try await _ in revoked { reused = true }
                if !reused {
                    // Used and already revoked (a second replay) still counts as reuse.
                    let rows = try await connection.query(
                        "SELECT 1 FROM refresh_tokens WHERE token_hash = \(hash) AND used_at IS NOT NULL", logger: logger)
                    for try await _ in rows { reused = true }
                }
                return reused ? .reused : .invalid
            }
            guard let tenant = TenantID(tenantText) else { return .invalid }
            try await assumeTenant(tenant, on: connection)
            guard let user = try await self.user(userID, tenant: tenant, on: connection) else { return .invalid }
            let next = RefreshToken.generate()
            try await insertRefreshToken(next, family: family, user: user, lifetime: lifetime, on: connection)
            return .rotated(user: user, newToken: next)
        }
    }

    /// Logout: revokes the token's whole family (that login, on every device it was rotated to).
    /// Only a token of `user` counts. False when it is not one.
    public func revokeRefreshFamily(_ token: String, user: UserRecord) async throws -> Bool {
        guard RefreshToken.looksValid(token) else { return false }
        let hash = ByteBuffer(bytes: RefreshToken.hash(token))
        return try await withTenant(user.tenant) { connection in
            let rows = try await connection.query("""
                UPDATE refresh_tokens SET revoked_at = coalesce(revoked_at, now())
                 WHERE family_id = (SELECT family_id FROM refresh_tokens
                                     WHERE token_hash = \(hash) AND user_id = \(user.id) AND tenant_id = \(user.tenant.rawValue))
                RETURNING 1
                """, logger: logger)
            var any = false
            for try await _ in rows { any = true }
            return any
        }
    }

    /// Revokes every refresh token of a user (logout everywhere).
    public func revokeAllRefreshTokens(user: UserRecord) async throws {
        try await withTenant(user.tenant) { connection in
            _ = try await connection.query("""
                UPDATE refresh_tokens SET revoked_at = now()
                 WHERE user_id = \(user.id) AND tenant_id = \(user.tenant.rawValue) AND revoked_at IS NULL
                """, logger: logger)
        }
    }

    private func insertRefreshToken(_ token: String, family: UUID, user: UserRecord, lifetime: Duration,
                                    on connection: PostgresConnection) async throws {
        let seconds = Double(lifetime.components.seconds)
        try await connection.query("""
            INSERT INTO refresh_tokens (tenant_id, user_id, family_id, token_hash, expires_at)
            VALUES (\(user.tenant.rawValue), \(user.id), \(family), \(ByteBuffer(bytes: RefreshToken.hash(token))),
                    now() + make_interval(secs => \(seconds)))
            """, logger: logger)
    }
}
