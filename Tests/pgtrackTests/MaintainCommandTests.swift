import Foundation
import Testing
import TrackingStore
import TrackingTestSupport

@Suite("pgtrack maintain and create-analyst")
struct MaintainCommandTests {
    @Test("maintain runs a pass and prints its report and the settings; --set changes a setting; --now moves the clock")
    func maintainPass() async throws {
        let url = try await TestCluster.freshDatabase()
        let first = try await PgtrackProcess.run(["maintain"], database: url)
        #expect(first.status == 0, "\(first)")
        let report = try #require(try first.json()["report"] as? [String: Any], "\(first.stdout)")
        #expect(report["ran"] as? Bool == true)
        #expect(report["retired"] as? [Any] != nil && report["rollups"] as? [Any] != nil)
        let settings = try #require(try first.json()["settings"] as? [String: Any])
        #expect(settings["positions_retention_days"] as? Int == 30)

        let set = try await PgtrackProcess.run(["maintain", "--set", "positions_retention_days=45", "--show-settings"], database: url)
        #expect(set.status == 0, "\(set)")
        #expect(try set.json()["positions_retention_days"] as? Int == 45)

        let later = try await PgtrackProcess.run(["maintain", "--now", "2040-01-01T00:00:00Z"], database: url)
        #expect(later.status == 0, "\(later)")
        let retired = try #require((try later.json()["report"] as? [String: Any])?["retired"] as? [[String: Any]])
        #expect(retired.count > 30, "every partition of today's window is long expired in 2040: \(retired.count)")
    }

    @Test("bad input is refused with a message that names what is allowed", arguments: [
        (["maintain", "--set", "retention"], "NAME=VALUE"),
        (["maintain", "--set", "no_such_setting=3"], "unknown maintenance setting"),
        (["maintain", "--set", "positions_retention_days=0"], "check constraint"),
        (["maintain", "--now", "yesterday"], "ISO-8601"),
        (["admin", "create-analyst", "--tenant", "acme", "--role", "Robert'); DROP"], "lowercase"),
        (["admin", "create-analyst", "--tenant", "missing"], "does not exist"),
    ])
    func refusals(arguments: [String], message: String) async throws {
        let url = try await TestCluster.freshDatabase()
        let result = try await PgtrackProcess.run(arguments, database: url)
        #expect(result.status != 0, "\(result)")
        #expect(result.stderr.contains(message), "\(result)")
    }

    @Test("create-analyst prints the role, a generated password and how to connect; drop-analyst removes it")
    func createAnalyst() async throws {
        let url = try await TestCluster.freshDatabase()
        let tenant = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme"], database: url)
        try #require(tenant.status == 0, "\(tenant)")
        let role = "analyst_" + UUID().uuidString.prefix(8).lowercased()
        let created = try await PgtrackProcess.run(["admin", "create-analyst", "--tenant", "acme", "--role", role], database: url)
        #expect(created.status == 0, "\(created)")
        let json = try created.json()
        #expect(json["role"] as? String == role)
        #expect(json["tenant_id"] as? String == "acme")
        #expect((json["password"] as? String)?.count == 24)
        #expect((json["psql"] as? String)?.contains("-U \(role)") == true)

        let dropped = try await PgtrackProcess.run(["admin", "drop-analyst", "--role", role], database: url)
        #expect(dropped.status == 0, "\(dropped)")
        let again = try await PgtrackProcess.run(["admin", "drop-analyst", "--role", role], database: url)
        #expect(again.status != 0 && again.stderr.contains("no analyst role"), "\(again)")
    }
}
