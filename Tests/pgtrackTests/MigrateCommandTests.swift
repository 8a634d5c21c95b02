import Foundation
import Testing
import TrackingStore
import TrackingTestSupport

@Suite("pgtrack migrate")
struct MigrateCommandTests {
    @Test("on an already migrated database it applies nothing and reports every migration as already applied")
    func alreadyMigrated() async throws {
        let url = try await TestCluster.freshDatabase()
        let files = try TestCluster.schemaFiles()
        let result = try await PgtrackProcess.run(["migrate"], database: url, workingDirectory: TestCluster.packageRoot)
        #expect(result.status == 0, "\(result)")
        let json = try result.json()
        let applied = try #require(json["applied"] as? [Any], "\(result.stdout)")
        #expect(applied.isEmpty)
        #expect(json["already_applied"] as? Int == files.migrations.count)
        #expect(json["definitions"] as? Int == files.definitions.count)
    }

    @Test("started from an unrelated directory it finds Migrations/ and SQL/ beside the executable and migrates an empty database")
    func emptyDatabaseFromElsewhere() async throws {
        let url = try await TestCluster.emptyDatabase()
        let result = try await PgtrackProcess.run(["migrate", "--partition-days-back", "2", "--partition-days-ahead", "1"],
                                                  database: url)
        #expect(result.status == 0, "\(result)")
        let json = try result.json()
        #expect((json["applied"] as? [String])?.first == "0001_core.sql", "\(result.stdout)")
        #expect(json["already_applied"] as? Int == 0)
        #expect(json["partitions_created"] as? Int == 4, "two days back, today, one ahead")

        let again = try await PgtrackProcess.run(["migrate"], database: url)
        #expect(again.status == 0, "\(again)")
        #expect((try again.json()["applied"] as? [Any])?.isEmpty == true)
    }

    @Test("--schema-dir pointing at a directory without Migrations/ fails with a message saying what is missing")
    func missingSchemaDirectory() async throws {
        let url = try await TestCluster.freshDatabase()
        let empty = FileManager.default.temporaryDirectory.appendingPathComponent("pgtrack-noschema-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: empty) }
        let result = try await PgtrackProcess.run(["migrate", "--schema-dir", empty.path], database: url)
        #expect(result.status != 0, "\(result)")
        #expect(result.stderr.contains("Migrations"), "\(result)")
    }
}
