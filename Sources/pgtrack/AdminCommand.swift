import ArgumentParser
import Foundation
import Logging
import TrackingCore
import TrackingStore

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Administrative tasks: tenants and devices.",
        subcommands: [CreateTenant.self, CreateDevice.self])

    struct CreateTenant: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-tenant", abstract: "Create a tenant; prints JSON with its id.")
        @Argument(help: "Tenant id: \(TenantID.rule).") var id: String
        @Option(help: "Display name.") var name: String
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard TenantID(id) != nil else { throw ValidationError("tenant id must be \(TenantID.rule)") }
            guard (1...200).contains(name.count) else { throw ValidationError("--name must be 1–200 characters") }
        }

        func run() async throws {
            Pgtrack.bootstrapLogging()
            let logger = Logger(label: "pgtrack")
            let tenant = TenantID(id)!
            let (settings, startedCluster) = try await database.resolve(logger: logger)
            defer { try? startedCluster?.stop() }
            let name = self.name
            try await runAdmin(settings, logger: logger) { repository in
                try await repository.createTenant(id: tenant, name: name)
            }
            print(try jsonLine(["tenant_id": tenant.rawValue, "name": name]))
        }
    }

    struct CreateDevice: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-device",
            abstract: "Create a device; prints JSON with its id and API key (shown once, stored only as a hash).")
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Display name.") var name: String
        @Option(help: "Device group (visibility scopes use it).") var group = "default"
        @Option(help: "Device grade 0–1000 (visibility scopes use it).") var grade = 0
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard TenantID(tenant) != nil else { throw ValidationError("--tenant must be \(TenantID.rule)") }
            guard (1...200).contains(name.count) else { throw ValidationError("--name must be 1–200 characters") }
            guard (1...100).contains(group.count) else { throw ValidationError("--group must be 1–100 characters") }
            guard (0...1_000).contains(grade) else { throw ValidationError("--grade must be 0–1000") }
        }

        func run() async throws {
            Pgtrack.bootstrapLogging()
            let logger = Logger(label: "pgtrack")
            let tenantID = TenantID(tenant)!
            let (settings, startedCluster) = try await database.resolve(logger: logger)
            defer { try? startedCluster?.stop() }
            let (name, group, grade) = (self.name, self.group, self.grade)
            let (device, key) = try await runAdmin(settings, logger: logger) { repository in
                try await repository.createDevice(tenant: tenantID, name: name, group: group, grade: grade)
            }
            print(try jsonLine([
                "device_id": device.id.uuidString.lowercased(), "tenant_id": tenantID.rawValue, "name": device.name,
                "group": device.group, "grade": String(device.grade), "api_key": key,
            ]))
        }
    }
}

/// Runs an admin action; an `APIError` (tenant exists, tenant missing…) becomes a clean failure.
private func runAdmin<T: Sendable>(
    _ settings: DatabaseConnectionSettings, logger: Logger, _ action: @escaping @Sendable (TrackingRepository) async throws -> T
) async throws -> T {
    do {
        return try await withPostgresClient(settings, logger: logger) { client in
            try await action(TrackingRepository(client: client, logger: logger))
        }
    } catch let error as APIError {
        throw ValidationError(error.message)
    }
}

private func jsonLine(_ fields: [String: String]) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    var text = String(decoding: try encoder.encode(fields), as: UTF8.self)
    // grade is a number on the wire
    if let grade = fields["grade"] { text = text.replacingOccurrences(of: #""grade":"\#(grade)""#, with: #""grade":\#(grade)"#) }
    return text
}
