import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("Migrator on an empty database")
struct MigratorTests {
    static func migrate(_ url: DatabaseURL, files: SchemaFiles) async throws -> Migrator.Report {
        try await Migrator(files: files, logger: TestCluster.logger).migrate(settings: DatabaseConnectionSettings(url: url))
    }

    /// version → count of rows in schema_migrations.
    static func recordedVersions(_ url: DatabaseURL) async throws -> [Int: Int] {
        try await TestCluster.withClient(url) { client in
            var versions: [Int: Int] = [:]
            for try await (version, count) in try await client.query(
                "SELECT version, count(*)::int8 FROM schema_migrations GROUP BY version", logger: TestCluster.logger
            ).decode((Int, Int).self) {
                versions[version] = count
            }
            return versions
        }
    }

    /// Migrations/ and SQL/ copied into a fresh temporary directory.
    static func copyOfSchema() throws -> URL {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("pgtrack-schema-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: root, withIntermediateDirectories: true)
        for directory in ["Migrations", "SQL"] {
            try FileManager.default.copyItem(at: TestCluster.packageRoot.appendingPathComponent(directory),
                                             to: root.appendingPathComponent(directory))
        }
        return root
    }

    @Test("a changed SQL/ file is re-applied; an unchanged SQL/ is not")
    func changedDefinitions() async throws {
        let url = try await TestCluster.emptyDatabase()
        let root = try Self.copyOfSchema()
        defer { try? FileManager.default.removeItem(at: root) }
        _ = try await Self.migrate(url, files: try SchemaFiles(root: root))

        let file = root.appendingPathComponent("SQL/020_change_log.sql")
        let edited = try String(contentsOf: file, encoding: .utf8) + """

            CREATE OR REPLACE FUNCTION pgtrack_test_marker() RETURNS integer LANGUAGE sql AS $$ SELECT 42 $$;
            """
        try edited.write(to: file, atomically: true, encoding: .utf8)
        let changed = try await Self.migrate(url, files: try SchemaFiles(root: root))
        #expect(!changed.definitionsUnchanged)
        let marker = try await TestCluster.withClient(url) { client in
            try await client.value("SELECT pgtrack_test_marker()", as: Int.self)
        }
        #expect(marker == 42)
        let again = try await Self.migrate(url, files: try SchemaFiles(root: root))
        #expect(again.definitionsUnchanged)
    }

    @Test("the first run applies every migration starting with 0001; the second is a no-op")
    func firstAndSecondRun() async throws {
        let url = try await TestCluster.emptyDatabase()
        let files = try TestCluster.schemaFiles()
        try #require(files.migrations.first?.name == "0001_core.sql")

        let first = try await Self.migrate(url, files: files)
        #expect(first.applied == files.migrations.map(\.name))
        #expect(first.alreadyApplied == 0)
        #expect(first.definitions == files.definitions.count)
        #expect(first.definitions > 0)
        #expect(!first.definitionsUnchanged)

        let second = try await Self.migrate(url, files: files)
        #expect(second.applied.isEmpty)
        #expect(second.alreadyApplied == files.migrations.count)
        #expect(second.definitions == files.definitions.count)
        #expect(second.definitionsUnchanged, "an identical SQL/ is not re-applied (it would lock positions)")

        let versions = try await Self.recordedVersions(url)
        check(versions == Dictionary(uniqueKeysWithValues: files.migrations.map { ($0.version, 1) }))
        // The schema is really there: the trigger function from SQL/ and the tables from 0001.
        let present = try await TestCluster.withClient(url) { client in
            try await client.value("""
                SELECT to_regclass('positions') IS NOT NULL AND to_regclass('change_log') IS NOT NULL
                   AND to_regprocedure('pgtrack_positions_after_insert()') IS NOT NULL
                """, as: Bool.self)
        }
        #expect(present)
    }

    @Test("an applied migration edited afterwards stops the migrator with a message naming the file")
    func editedMigration() async throws {
        let url = try await TestCluster.emptyDatabase()
        let root = try Self.copyOfSchema()
        defer { try? FileManager.default.removeItem(at: root) }
        _ = try await Self.migrate(url, files: try SchemaFiles(root: root))
        let recordedBefore = try await TestCluster.withClient(url) { client in
            try await client.value("SELECT checksum FROM schema_migrations WHERE version = 1", as: String.self)
        }

        let file = root.appendingPathComponent("Migrations/0001_core.sql")
        var bytes = Array(try Data(contentsOf: file))
        let index = try #require(bytes.firstIndex(of: UInt8(ascii: "C")))  // "-- Core schema…" → "-- core schema…"
        bytes[index] = UInt8(ascii: "c")
        try Data(bytes).write(to: file)

        do {
            let report = try await Self.migrate(url, files: try SchemaFiles(root: root))
            Issue.record("the edited migration was accepted: \(report)")
        } catch let error as Migrator.Failure {
            #expect(error.description.contains("0001_core.sql"))
            #expect(error.description.contains("edited"))
        }
        let recordedAfter = try await TestCluster.withClient(url) { client in
            try await client.value("SELECT checksum FROM schema_migrations WHERE version = 1", as: String.self)
        }
        #expect(recordedAfter == recordedBefore)
    }

    @Test("two migrators at once on the same empty database both succeed and apply each migration once")
    func concurrent() async throws {
        let url = try await TestCluster.emptyDatabase()
        let files = try TestCluster.schemaFiles()
        async let first = Self.migrate(url, files: files)
        async let second = Self.migrate(url, files: files)
        let reports = try await [first, second]

        let appliedByBoth = reports.flatMap(\.applied)
        #expect(appliedByBoth.sorted() == files.migrations.map(\.name).sorted(), "each migration applied by exactly one migrator")
        #expect(reports.map(\.alreadyApplied).reduce(0, +) == files.migrations.count)
        let versions = try await Self.recordedVersions(url)
        check(versions == Dictionary(uniqueKeysWithValues: files.migrations.map { ($0.version, 1) }))
    }

    @Test("a failing migration is rolled back and reported with its file and statement")
    func failingMigration() async throws {
        let url = try await TestCluster.emptyDatabase()
        let root = try Self.copyOfSchema()
        defer { try? FileManager.default.removeItem(at: root) }
        try "CREATE TABLE half_done (id int);\nSELECT no_such_function();\n"
            .write(to: root.appendingPathComponent("Migrations/9999_broken.sql"), atomically: true, encoding: .utf8)
        do {
            _ = try await Self.migrate(url, files: try SchemaFiles(root: root))
            Issue.record("a broken migration was accepted")
        } catch let error as Migrator.Failure {
            #expect(error.description.contains("9999_broken.sql"))
            #expect(error.description.contains("statement 2"))
            #expect(error.description.contains("no_such_function"))
        }
        let state = try await TestCluster.withClient(url) { client in
            try await client.value("""
                SELECT (to_regclass('half_done') IS NULL)::text || ',' ||
                       (SELECT string_agg(version::text, ',' ORDER BY version) FROM schema_migrations)
                """, as: String.self)
        }
        let shipped = try TestCluster.schemaFiles().migrations.map { String($0.version) }.joined(separator: ",")
        #expect(state == "true,\(shipped)", "the shipped migrations stay applied, 9999 leaves nothing behind")
    }
}
