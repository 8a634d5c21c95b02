import PostgresNIO
import TrackingCore

extension TrackingRepository {
    /// Removes a tenant and everything it owns; returns false when there was no such tenant.
    ///
    /// Devices, users, trips, sync tables and fleet rows go by their foreign keys' ON DELETE
    /// CASCADE. The change log and its head have no foreign key (the log is written by triggers
    /// on the hot path and must not pay for one), and deleting the devices logs their removal
    /// into it, so both are cleared after the cascade, in the same transaction: a tenant created
    /// later under the same id starts with an empty log instead of another tenant's history.
    public func removeTenant(_ id: TenantID) async throws -> Bool {
        try await transaction { connection in
            let removed = try await connection.query("DELETE FROM tenants WHERE id = \(id.rawValue) RETURNING id", logger: logger)
                .collect().count
            guard removed > 0 else { return false }
            try await connection.query("DELETE FROM change_log WHERE tenant_id = \(id.rawValue)", logger: logger)
            try await connection.query("DELETE FROM change_log_heads WHERE tenant_id = \(id.rawValue)", logger: logger)
            return true
        }
    }

    public func tenantExists(_ id: TenantID) async throws -> Bool {
        try await client.query("SELECT 1 FROM tenants WHERE id = \(id.rawValue)", logger: logger).collect().count > 0
    }
}
