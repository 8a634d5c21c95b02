import Testing
import TrackingTestSupport

@Suite("pgtrack --help")
struct HelpTests {
    @Test("lists the serve, migrate, db and admin commands")
    func topLevel() async throws {
        let result = try await PgtrackProcess.runRaw(["--help"], environment: [:])
        #expect(result.status == 0, "\(result)")
        let subcommands = result.stdout.components(separatedBy: "SUBCOMMANDS:").last ?? ""
        for command in ["serve", "migrate", "db", "admin"] {
            check(subcommands.split(separator: "\n").contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix(command + " ") },
                    "\(command) missing from:\n\(result.stdout)")
        }
    }

    @Test("admin --help lists create-tenant and create-device; db --help lists start, stop and status")
    func nested() async throws {
        let admin = try await PgtrackProcess.runRaw(["admin", "--help"], environment: [:])
        #expect(admin.status == 0)
        #expect(admin.stdout.contains("create-tenant") && admin.stdout.contains("create-device"), "\(admin)")
        let db = try await PgtrackProcess.runRaw(["db", "--help"], environment: [:])
        #expect(db.status == 0)
        for command in ["start", "stop", "status"] { #expect(db.stdout.contains(command), "\(db)") }
    }

    @Test("an unknown command fails with a non-zero exit")
    func unknownCommand() async throws {
        let result = try await PgtrackProcess.runRaw(["frobnicate"], environment: [:])
        #expect(result.status != 0)
        #expect(!result.stderr.isEmpty)
    }
}
