import Logging
import PostgresNIO
import TrackingCore

/// Applies `Migrations/` once each (in its own transaction, with a recorded checksum) and then
/// re-applies `SQL/`. A session advisory lock makes concurrent migrators on several nodes wait
/// for each other instead of colliding.
public struct Migrator: Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public let description: String
    }

    public struct Report: Sendable, Equatable {
        public var applied: [String] = []
        public var alreadyApplied = 0
        public var definitions = 0
        /// SQL/ was identical to what was last applied, so it was not re-run.
        public var definitionsUnchanged = false
    }

    /// Arbitrary but fixed: every pgtrack node uses the same key.
    static let advisoryLockKey: Int64 = 0x7067_7472_6163_6b01

    let files: SchemaFiles
    let logger: Logger

    public init(files: SchemaFiles, logger: Logger) {
        self.files = files
        self.logger = logger
    }

    public func migrate(settings: DatabaseConnectionSettings) async throws -> Report {
        let connection = try await PostgresConnection.connect(
            configuration: try settings.connectionConfiguration(applicationName: "pgtrack-migrate"), id: 1, logger: logger)
        do {
            let report = try await migrate(on: connection)
            try await connection.close()
            return report
        } catch {
            try? await connection.close()
            throw error
        }
    }

    func migrate(on connection: PostgresConnection) async throws -> Report {
        try await connection.query("SELECT pg_advisory_lock(\(Self.advisoryLockKey))", logger: logger)
        do {
            let report = try await applyAll(on: connection)
            try await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))", logger: logger)
            return report
        } catch {
            // The lock is per session; closing the connection releases it too.
            _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.advisoryLockKey))", logger: logger)
            throw error
        }
    }

    private func applyAll(on connection: PostgresConnection) async throws -> Report {
        try await connection.query("""
            CREATE TABLE IF NOT EXISTS schema_migrations (
                version    integer PRIMARY KEY,
                name       text NOT NULL,
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """, logger: logger)
        var applied: [Int: (name: String, checksum: String)] = [:]
        for try await (version, name, checksum) in try await connection.query(
            "SELECT version, name, checksum FROM schema_migrations", logger: logger
        ).decode((Int, String, String).self) {
            applied[version] = (name, checksum)
        }

        var report = Report()
        for migration in files.migrations {
            if let recorded = applied[migration.version] {
                guard recorded.checksum == migration.checksum else {
                    throw Failure(description: """
                        migration \(migration.name) was edited after it was applied \
                        (recorded checksum \(recorded.checksum.prefix(12))…, file now \(migration.checksum.prefix(12))…). \
                        Applied migrations are never changed: revert the edit and put the change in a new migration.
                        """)
                }
                report.alreadyApplied += 1
                continue
            }
            try await runInTransaction(on: connection, label: migration.name, sql: migration.sql) {
                try await connection.query("""
                    INSERT INTO schema_migrations (version, name, checksum)
                    VALUES (\(migration.version), \(migration.name), \(migration.checksum))
                    """, logger: logger)
            }
            logger.info("applied migration", metadata: ["migration": "\(migration.name)"])
            report.applied.append(migration.name)
        }

        // Repeatable definitions: one transaction, so a node never sees half of them. Skipped when
        // identical to the last applied set: re-creating triggers locks `positions`, and every
        // node start would otherwise queue all writers behind any long-running query.
        let combined = files.definitions.map { "-- \($0.name)\n\($0.sql)" }.joined(separator: "\n;\n")
        let checksum = SchemaFiles.sha256(combined)
        try await connection.query("""
            CREATE TABLE IF NOT EXISTS schema_definitions (
                id         integer PRIMARY KEY CHECK (id = 1),
                checksum   text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now()
            )
            """, logger: logger)
        var appliedDefinitions: String?
        for try await recorded in try await connection.query(
            "SELECT checksum FROM schema_definitions WHERE id = 1", logger: logger
        ).decode(String.self) {
            appliedDefinitions = recorded
        }
        report.definitions = files.definitions.count
        if appliedDefinitions == checksum && report.applied.isEmpty {
            report.definitionsUnchanged = true
            return report
        }
        try await runInTransaction(on: connection, label: "SQL/", sql: combined) {
            try await connection.query("""
                INSERT INTO schema_definitions (id, checksum) VALUES (1, \(checksum))
                ON CONFLICT (id) DO UPDATE SET checksum = EXCLUDED.checksum, applied_at = now()
                """, logger: logger)
        }
        return report
    }

    private func runInTransaction(
        on connection: PostgresConnection, label: String, sql: String, then: () async throws -> Void
    ) async throws {
        try await connection.query("BEGIN", logger: logger)
        do {
            for (number, statement) in SQLScriptSplitter.split(sql).enumerated() {
                do {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                } catch {
                    throw Failure(description: """
                        \(label), statement \(number + 1) failed: \(describeDatabaseError(error))
                        statement: \(statement.prefix(300))
                        """)
                }
            }
            try await then()
            try await connection.query("COMMIT", logger: logger)
        } catch {
            _ = try? await connection.query("ROLLBACK", logger: logger)
            throw error
        }
    }
}
