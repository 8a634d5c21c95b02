import ArgumentParser
import Foundation
import Logging
import TrackingCore
import TrackingServer
import TrackingStore

struct Admin: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Administrative tasks: tenants, devices, users, sync keys and analysts.",
        subcommands: [CreateTenant.self, CreateDevice.self, CreateUser.self, CreateSyncKey.self, CreateIngestKey.self, CreateAnalyst.self,
                      DropAnalyst.self])

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
        @Option(help: "The device's id in device protocols (Traccar uniqueId, OsmAnd id): \(DeviceUniqueID.rule).")
        var uniqueId: String?
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard TenantID(tenant) != nil else { throw ValidationError("--tenant must be \(TenantID.rule)") }
            guard (1...200).contains(name.count) else { throw ValidationError("--name must be 1–200 characters") }
            guard (1...100).contains(group.count) else { throw ValidationError("--group must be 1–100 characters") }
            guard (0...1_000).contains(grade) else { throw ValidationError("--grade must be 0–1000") }
            if let uniqueId, DeviceUniqueID(uniqueId) == nil { throw ValidationError("--unique-id must be \(DeviceUniqueID.rule)") }
        }

        func run() async throws {
            Pgtrack.bootstrapLogging()
            let logger = Logger(label: "pgtrack")
            let tenantID = TenantID(tenant)!
            let (settings, startedCluster) = try await database.resolve(logger: logger)
            defer { try? startedCluster?.stop() }
            let (name, group, grade) = (self.name, self.group, self.grade)
            let uniqueID = uniqueId.flatMap(DeviceUniqueID.init)
            let (device, key) = try await runAdmin(settings, logger: logger) { repository in
                try await repository.createDevice(tenant: tenantID, name: name, group: group, grade: grade, uniqueID: uniqueID)
            }
            print(try jsonLine(CreatedDevice(
                deviceID: device.id.uuidString.lowercased(), tenantID: tenantID.rawValue, name: device.name,
                group: device.group, grade: device.grade, uniqueID: uniqueID?.rawValue, apiKey: key)))
        }
    }
}

extension Admin {
    struct CreateUser: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-user",
            abstract: "Create a user (the first admin of a tenant, typically); prints the user as JSON.",
            discussion: "The password is read from PGTRACK_PASSWORD, or from standard input when it is not set, so it stays out of shell history and process lists.")
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "Email address (the login name within the tenant).") var email: String
        @Option(help: "Display name.") var name: String
        @Option(help: "Role: \(Role.list).") var role = "admin"
        @Option(help: "For drivers: the id of their device.") var deviceId: String?
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard TenantID(tenant) != nil else { throw ValidationError("--tenant must be \(TenantID.rule)") }
            guard Role(rawValue: role) != nil else { throw ValidationError("--role must be one of \(Role.list)") }
            if let deviceId, UUID(uuidString: deviceId) == nil { throw ValidationError("--device-id must be a device id (UUID)") }
        }

        func run() async throws {
            Pgtrack.bootstrapLogging()
            let logger = Logger(label: "pgtrack")
            let tenantID = TenantID(tenant)!
            let password = try Self.readPassword()
            let input = UserInput(email: email, name: name, password: password, role: role,
                                  deviceID: deviceId.flatMap(UUID.init(uuidString:)))
            do { _ = try input.validated() } catch { throw ValidationError(error.message) }
            let (settings, startedCluster) = try await database.resolve(logger: logger)
            defer { try? startedCluster?.stop() }
            let user = try await runAdmin(settings, logger: logger) { repository in
                try await UserRegistration(repository: repository).register(input, tenant: tenantID)
            }
            print(try jsonLine(CreatedUser(userID: user.id.uuidString.lowercased(), tenantID: tenantID.rawValue,
                                           email: user.email, name: user.name, role: user.role.rawValue)))
        }

        static func readPassword() throws -> String {
            if let password = ProcessInfo.processInfo.environment["PGTRACK_PASSWORD"], !password.isEmpty { return password }
            guard let line = readLine(strippingNewline: true), !line.isEmpty else {
                throw ValidationError("no password: set PGTRACK_PASSWORD or pipe it on standard input")
            }
            return line
        }
    }
}

struct CreatedUser: Encodable {
    let userID: String
    let tenantID: String
    let email: String
    let name: String
    let role: String
    enum CodingKeys: String, CodingKey { case userID = "user_id", tenantID = "tenant_id", email, name, role }
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

extension Admin {
    struct CreateSyncKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-sync-key",
            abstract: "Create an API key that may only post CDC change events (POST /api/v1/sync/changes); prints it once as JSON.")
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "What feeds with it (e.g. debezium-orders).") var name = "sync"
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard TenantID(tenant) != nil else { throw ValidationError("--tenant must be \(TenantID.rule)") }
            guard (1...100).contains(name.count) else { throw ValidationError("--name must be 1–100 characters") }
        }

        func run() async throws {
            try await createTenantKey(tenant: tenant, name: name, database: database) { repository, tenant, name in
                try await repository.createSyncKey(tenant: tenant, name: name)
            }
        }
    }
}

/// Creates a tenant-level API key (sync or ingest) and prints it once as JSON.
private func createTenantKey(
    tenant: String, name: String, database: DatabaseOptions,
    _ create: @escaping @Sendable (TrackingRepository, TenantID, String) async throws -> (id: UUID, apiKey: String)?
) async throws {
    Pgtrack.bootstrapLogging()
    let logger = Logger(label: "pgtrack")
    let tenantID = TenantID(tenant)!
    let (settings, startedCluster) = try await database.resolve(logger: logger)
    defer { try? startedCluster?.stop() }
    let created = try await runAdmin(settings, logger: logger) { repository in
        try await create(repository, tenantID, name)
    }
    guard let created else {
        throw ValidationError("tenant \(tenantID) does not exist; create it first with `pgtrack admin create-tenant`")
    }
    print(try jsonLine(CreatedTenantKey(keyID: created.id.uuidString.lowercased(), tenantID: tenantID.rawValue,
                                      name: name, apiKey: created.apiKey)))
}

struct CreatedTenantKey: Encodable {
    let keyID: String
    let tenantID: String
    let name: String
    let apiKey: String
    enum CodingKeys: String, CodingKey { case keyID = "key_id", tenantID = "tenant_id", name, apiKey = "api_key" }
}

struct CreatedDevice: Encodable {
    let deviceID: String
    let tenantID: String
    let name: String
    let group: String
    let grade: Int
    let uniqueID: String?
    let apiKey: String
    enum CodingKeys: String, CodingKey {
        case deviceID = "device_id", tenantID = "tenant_id", name, group, grade, uniqueID = "unique_id", apiKey = "api_key"
    }
}

extension Admin {
    struct CreateIngestKey: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "create-ingest-key",
            abstract: "Create a tenant ingest key for device protocols (a Traccar server forwarding for many devices); prints it once as JSON.",
            discussion: "Each fix posted with it names its device by unique id (create-device --unique-id); unknown ids are refused.")
        @Option(help: "Tenant id.") var tenant: String
        @Option(help: "What forwards with it (e.g. traccar-main).") var name = "ingest"
        @OptionGroup var database: DatabaseOptions

        func validate() throws {
            guard TenantID(tenant) != nil else { throw ValidationError("--tenant must be \(TenantID.rule)") }
            guard (1...100).contains(name.count) else { throw ValidationError("--name must be 1–100 characters") }
        }

        func run() async throws {
            try await createTenantKey(tenant: tenant, name: name, database: database) { repository, tenant, name in
                try await repository.createIngestKey(tenant: tenant, name: name)
            }
        }
    }
}

func jsonLine(_ value: some Encodable) throws -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: try encoder.encode(value), as: UTF8.self)
}
