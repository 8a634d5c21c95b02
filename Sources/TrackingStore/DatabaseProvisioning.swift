import Logging
import PostgresNIO
import TrackingCore

/// Creates the application database on a server pgtrack manages (the local cluster, tests).
public enum DatabaseProvisioning {
    /// Connects to the `postgres` maintenance database and creates `url.database` if missing,
    /// optionally as a copy of `template`.
    public static func createDatabaseIfMissing(_ url: DatabaseURL, template: String? = nil, logger: Logger) async throws {
        let settings = DatabaseConnectionSettings(url: url.with(database: "postgres"))
        let connection = try await PostgresConnection.connect(
            configuration: try settings.connectionConfiguration(applicationName: "pgtrack-provision"), id: 1, logger: logger)
        defer { Task { try? await connection.close() } }
        let rows = try await connection.query(
            "SELECT count(*) FROM pg_database WHERE datname = \(url.database)", logger: logger)
        var exists = false
        for try await count in rows.decode(Int.self) { exists = count > 0 }
        guard !exists else { return }
        guard isPlainIdentifier(url.database), template.map(isPlainIdentifier) ?? true else {
            throw APIError.badRequest("database names must be lowercase letters, digits and '_'")
        }
        let templateClause = template.map { " TEMPLATE \($0)" } ?? ""
        try await connection.query(PostgresQuery(unsafeSQL: "CREATE DATABASE \(url.database)\(templateClause)"), logger: logger)
    }

    static func isPlainIdentifier(_ name: String) -> Bool {
        !name.isEmpty && name.utf8.count < 64
            && name.utf8.allSatisfy { ($0 >= 97 && $0 <= 122) || ($0 >= 48 && $0 <= 57) || $0 == 95 }
    }
}
