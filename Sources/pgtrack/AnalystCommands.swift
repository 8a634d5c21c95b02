import ArgumentParser
import Foundation
import Logging
import TrackingCore
import TrackingStore

extension Admin {
    struct CreateAnalyst: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-analyst",
            abstract: "Create a read-only PostgreSQL login for analysts: schema analytics of one tenant, nothing else.",
            discussion: """
                The password is read from PGTRACK_PASSWORD, or generated and printed once. The role reads the views \
                of schema analytics, restricted by row-level security to the tenant; it cannot write or read base tables.
                """)
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Login role name (lowercase letters, digits, _; default analyst_<tenant>).") var role: String?
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard TenantID(tenant) != nil else { throw ValidationError("--tenant must be \(TenantID.rule)") }
            if let role, role.range(of: "^[a-z_][a-z0-9_]{0,62}$", options: .regularExpression) == nil {
                throw ValidationError("--role must be lowercase letters, digits and _ (at most 63), starting with a letter or _")
            }
        }

        func run() async throws {
            Pgtrack.bootstrapLogging()
            let logger = Logger(label: "pgtrack")
            let roleName = role ?? "analyst_" + tenant.replacingOccurrences(of: "-", with: "_")
            let supplied = ProcessInfo.processInfo.environment["PGTRACK_PASSWORD"].flatMap { $0.isEmpty ? nil : $0 }
            let password = supplied ?? Self.generatedPassword()
            let (settings, startedCluster) = try await database.resolve(logger: logger)
            defer { try? startedCluster?.stop() }
            let tenant = self.tenant
            do {
                try await withPostgresClient(settings, logger: logger) { client in
                    try await Maintenance(client: client, logger: logger)
                        .createAnalyst(tenant: tenant, role: roleName, password: password)
                }
            } catch let error as MaintenanceError {
                throw ValidationError(error.description)
            }
            let url = settings.url
            print(try jsonLine(CreatedAnalyst(
                role: roleName, tenantID: tenant, password: supplied == nil ? password : nil, database: url.database,
                psql: "psql -h \(url.host) -p \(url.port) -U \(roleName) \(url.database)")))
        }

        static func generatedPassword() -> String {
            var generator = SystemRandomNumberGenerator()
            return (0..<24).map { _ in String(UInt8.random(in: 0...15, using: &generator), radix: 16) }.joined()
        }
    }

    struct DropAnalyst: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "drop-analyst", abstract: "Remove an analyst login created by create-analyst.")
        @Option(help: "Login role name.") var role: String
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            Pgtrack.bootstrapLogging()
            let logger = Logger(label: "pgtrack")
            let (settings, startedCluster) = try await database.resolve(logger: logger)
            defer { try? startedCluster?.stop() }
            let role = self.role
            let dropped = try await withPostgresClient(settings, logger: logger) { client in
                try await Maintenance(client: client, logger: logger).dropAnalyst(role: role)
            }
            guard dropped else { throw ValidationError("no analyst role named \(role)") }
            print(#"{"dropped":true,"role":\#(try jsonLine(role))}"#)
        }
    }
}

struct CreatedAnalyst: Encodable {
    let role: String
    let tenantID: String
    /// Only when generated: shown once.
    let password: String?
    let database: String
    let psql: String
    enum CodingKeys: String, CodingKey { case role, tenantID = "tenant_id", password, database, psql }
}
