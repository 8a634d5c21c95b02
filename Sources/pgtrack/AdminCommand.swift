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
            print(try jsonLine(CreatedTenant(tenantID: tenant.rawValue, name: name)))
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
            print(try jsonLine(CreatedDevice(
                deviceID: device.id.uuidString.lowercased(), tenantID: tenantID.rawValue, name: device.name,
                group: device.group, grade: device.grade, apiKey: key)))
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

struct CreatedTenant: Encodable {
    let tenantID: String
    let name: String
    enum CodingKeys: String, CodingKey { case tenantID = "tenant_id", name }
}

struct CreatedDevice: Encodable {
    let deviceID: String
    let tenantID: String
    let name: String
    let group: String
    let grade: Int
    let apiKey: String
    enum CodingKeys: String, CodingKey {
        case deviceID = "device_id", tenantID = "tenant_id", name, group, grade, apiKey = "api_key"
    }
}

private func jsonLine(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
