import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("pgtrack admin create-user", .timeLimit(.minutes(5)))
struct CreateUserCommandTests {
    /// `pgtrack admin create-user …` against `url`, with PGTRACK_PASSWORD set to `password` ("" unsets it).
    static func createUser(_ arguments: [String], password: String, database url: DatabaseURL) async throws -> PgtrackProcess.Result {
        try await PgtrackProcess.runRaw(["admin", "create-user"] + arguments,
                                        environment: ["DATABASE_URL": try PgtrackProcess.databaseURLText(url), "PGTRACK_PASSWORD": password])
    }

    static func tenant(_ url: DatabaseURL) async throws {
        let result = try await PgtrackProcess.run(["admin", "create-tenant", "acme", "--name", "Acme"], database: url)
        try #require(result.status == 0, "\(result)")
    }

    /// (role, password_hash) of every user row with `email`.
    static func rows(email: String, _ url: DatabaseURL) async throws -> [(String, String)] {
        try await TestCluster.withClient(url) { client in
            var rows: [(String, String)] = []
            for try await row in try await client.query("SELECT role, password_hash FROM users WHERE email = \(email)",
                                                        logger: TestCluster.logger).decode((String, String).self) {
                rows.append(row)
            }
            return rows
        }
    }

    @Test("with PGTRACK_PASSWORD it prints the new admin as JSON and stores a bcrypt hash of that password, never the password")
    func createsAdmin() async throws {
        let url = try await TestCluster.freshDatabase()
        try await Self.tenant(url)
        let password = "Sup3r-secret passphrase"
        let result = try await Self.createUser(["--tenant", "acme", "--email", "Boss@Example.com", "--name", "Boss"],
                                               password: password, database: url)
        #expect(result.status == 0, "\(result)")
        let json = try result.json()
        #expect(json["role"] as? String == "admin", "admin is the default role: \(json)")
        #expect(json["email"] as? String == "boss@example.com", "stored lowercased: \(json)")
        #expect(json["tenant_id"] as? String == "acme")
        #expect(json["name"] as? String == "Boss")
        let userID = try #require((json["user_id"] as? String).flatMap(UUID.init(uuidString:)), "\(result.stdout)")
        #expect(!result.stdout.contains(password) && !result.stderr.contains(password), "the password is never printed: \(result)")

        let rows = try await Self.rows(email: "boss@example.com", url)
        try #require(rows.count == 1, "one users row: \(rows.count)")
        let (role, hash) = rows[0]
        #expect(role == "admin")
        #expect(hash.hasPrefix("$2"), "a bcrypt hash: \(hash.prefix(7))")
        #expect(hash.count == 60, "bcrypt hashes are 60 characters: \(hash.count)")
        #expect(!hash.contains(password))

        // The hash verifies the password (and only it). pgcrypto knows bcrypt as $2a$, which
        // computes the same as $2b$ for passwords this short.
        let verdicts = try await TestCluster.withClient(url) { client in
            _ = try await client.query("CREATE EXTENSION IF NOT EXISTS pgcrypto", logger: TestCluster.logger)
            var verdicts: [Bool] = []
            let normalized = "$2a$" + hash.dropFirst(4)
            for candidate in [password, password.lowercased(), "wrong password"] {
                for try await ok in try await client.query("SELECT crypt(\(candidate), \(normalized)) = \(normalized)",
                                                           logger: TestCluster.logger).decode(Bool.self) {
                    verdicts.append(ok)
                }
            }
            return verdicts
        }
        #expect(verdicts == [true, false, false], "crypt() verdicts for the right, lowercased and a wrong password")

        let exists = try await TestCluster.withClient(url) { client in
            try await TrackingRepository(client: client, logger: TestCluster.logger).user(userID, tenant: TenantID("acme")!)
        }
        #expect(exists?.role == .admin)
    }

    @Test("a second user with the same email, in any case, is refused saying it exists")
    func duplicate() async throws {
        let url = try await TestCluster.freshDatabase()
        try await Self.tenant(url)
        let first = try await Self.createUser(["--tenant", "acme", "--email", "ops@example.com", "--name", "Ops"],
                                              password: "first password", database: url)
        try #require(first.status == 0, "\(first)")
        let second = try await Self.createUser(["--tenant", "acme", "--email", "OPS@example.com", "--name", "Ops 2", "--role", "viewer"],
                                               password: "second password", database: url)
        #expect(second.status != 0, "\(second)")
        #expect(second.stderr.contains("already exists"), "\(second)")
        #expect(try await Self.rows(email: "ops@example.com", url).map(\.0) == ["admin"], "the first user is unchanged")
    }

    @Test("a password shorter than 8 bytes fails with a clear message and creates nothing")
    func shortPassword() async throws {
        let url = try await TestCluster.freshDatabase()
        try await Self.tenant(url)
        let result = try await Self.createUser(["--tenant", "acme", "--email", "short@example.com", "--name", "Short"],
                                               password: "1234567", database: url)
        #expect(result.status != 0, "\(result)")
        #expect(result.stderr.contains("password must be 8–72 bytes"), "\(result)")
        #expect(!result.stdout.contains("user_id"), "\(result)")
        #expect(try await Self.rows(email: "short@example.com", url).isEmpty)
    }

    @Test("without PGTRACK_PASSWORD and with nothing on standard input it fails saying where the password comes from")
    func noPassword() async throws {
        let url = try await TestCluster.freshDatabase()
        try await Self.tenant(url)
        let result = try await Self.createUser(["--tenant", "acme", "--email", "none@example.com", "--name", "None"],
                                               password: "", database: url)
        #expect(result.status != 0, "\(result)")
        #expect(result.stderr.contains("PGTRACK_PASSWORD"), "\(result)")
        #expect(try await Self.rows(email: "none@example.com", url).isEmpty)
    }

    @Test("an unknown role or tenant is refused naming the problem")
    func badRoleOrTenant() async throws {
        let url = try await TestCluster.freshDatabase()
        try await Self.tenant(url)
        let role = try await Self.createUser(["--tenant", "acme", "--email", "r@example.com", "--name", "R", "--role", "root"],
                                             password: "long enough", database: url)
        #expect(role.status != 0, "\(role)")
        #expect(role.stderr.contains(Role.list), "\(role)")
        let tenant = try await Self.createUser(["--tenant", "ghost", "--email", "g@example.com", "--name", "G"],
                                               password: "long enough", database: url)
        #expect(tenant.status != 0, "\(tenant)")
        #expect(tenant.stderr.contains("ghost") && tenant.stderr.contains("does not exist"), "\(tenant)")
        #expect(try await Self.rows(email: "r@example.com", url).isEmpty)
        #expect(try await Self.rows(email: "g@example.com", url).isEmpty)
    }
}
