import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// CDC sync tables: `POST /api/v1/sync/changes` applies Debezium change events (admin or a sync
/// API key); reads, status and lag for the tenant. The SQL lives in SQL/070_sync.sql.
struct SyncRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator

    /// Debezium batches are bigger than other bodies; one request holds at most this many events.
    static let maxBodyBytes = 16 << 20
    static let maxEvents = 10_000

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/sync/changes", use: changes)
        router.get("/api/v1/sync/status", use: status)
        router.get("/api/v1/sync/lag", use: lag)
        router.get("/api/v1/sync/dead-letters", use: deadLetters)
        router.get("/api/v1/sync/mappings", use: mappings)
        router.put("/api/v1/sync/mappings", use: replaceMappings)
        router.get("/api/v1/sync/:table", use: rows)
        router.get("/api/v1/sync/:table/:id", use: row)
    }

    // MARK: Writing

    @Sendable func changes(request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try await writer(request)
        let mode = try Self.errorMode(request.uri.queryParameters.get("on_error"))
        let body = try await request.collectBody(limit: Self.maxBodyBytes)
        let isArray = try Self.checkEvents(body.readableBytesView)
        do {
            return jsonResponse(try await repository.applySyncChanges(String(buffer: body), tenant: tenant, mode: mode))
        } catch let rejected as SyncEventRejected {
            throw APIError.invalid(rejected.message, field: nil, index: isArray ? rejected.index : nil)
        }
    }

    /// The tenant a change feed writes to: a sync API key's, or an admin's.
    private func writer(_ request: Request) async throws -> TenantID {
        if let key = request.headers[.apiKey], key.hasPrefix("pgs_") {
            guard let tenant = try await repository.authenticateSyncKey(key) else {
                throw APIError.unauthorized("Invalid sync API key.")
            }
            return tenant
        }
        return try await requireAdmin(request)
    }

    static func errorMode(_ raw: String?) throws -> SyncErrorMode {
        guard let raw else { return .fail }
        guard let mode = SyncErrorMode(rawValue: raw) else {
            throw APIError.invalid("on_error: must be fail (a bad event fails the batch) or dead_letter (it is set aside).",
                                   field: "on_error", index: nil)
        }
        return mode
    }

    /// The body must be JSON: one event (an object, or null for a tombstone) or an array of at
    /// most `maxEvents`. Returns whether it is an array. The events themselves are checked by SQL.
    static func checkEvents(_ bytes: some Collection<UInt8>) throws -> Bool {
        // jsonb cannot hold U+0000, so an event with one can be neither applied nor
        // dead-lettered: the request is refused naming it (PostgreSQL's error would name none).
        try NULCharacter.checkJSON(bytes)
        let data = Data(bytes)
        let parsed: Any
        do {
            parsed = try JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed])
        } catch {
            throw APIError.badRequest("The request body is not valid JSON: send a Debezium change event or an array of them.",
                                      code: "malformed_json")
        }
        switch parsed {
        case let array as [Any]:
            guard array.count <= maxEvents else {
                throw APIError.invalid("A request holds at most \(maxEvents) events; this one has \(array.count).", field: nil, index: nil)
            }
            return true
        case is [String: Any], is NSNull:
            return false
        default:
            throw APIError.badRequest("The body must be a change event (an object), an array of them, or null.", code: "malformed_json")
        }
    }

    // MARK: Reading

    @Sendable func status(request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try await reader(request)
        return jsonResponse(try await repository.syncStatus(tenant: tenant))
    }

    @Sendable func lag(request: Request, context: AppRequestContext) async throws -> Response {
        jsonResponse(try await repository.syncLag(tenant: try await requireAdmin(request)))
    }

    @Sendable func deadLetters(request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try await requireAdmin(request)
        let query = request.uri.queryParameters
        let limit = try Self.limit(query.get("limit"))
        var before: Int64?
        if let raw = query.get("cursor") {
            guard let id = Int64(raw), id > 0 else {
                throw APIError.invalid("cursor: must be the next_cursor of a previous page.", field: "cursor", index: nil)
            }
            before = id
        }
        return jsonResponse(try await repository.syncDeadLetters(tenant: tenant, before: before, limit: limit))
    }

    @Sendable func rows(request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try await reader(request)
        let table = try Self.table(context.parameters.get("table"))
        let query = request.uri.queryParameters
        let limit = try Self.limit(query.get("limit"))
        let cursor = query.get("cursor")
        if let cursor, cursor.isEmpty || cursor.count > 200 {
            throw APIError.invalid("cursor: must be the next_cursor of a previous page.", field: "cursor", index: nil)
        }
        let includeDeleted = try Self.flag(query.get("include_deleted"), name: "include_deleted")
        return jsonResponse(try await repository.syncRows(table, tenant: tenant, after: cursor, limit: limit, includeDeleted: includeDeleted))
    }

    @Sendable func row(request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try await reader(request)
        let table = try Self.table(context.parameters.get("table"))
        // Source keys are any text: the path segment is percent-decoded after routing, so an
        // id with a space, a slash (%2F) or non-ASCII characters finds its row.
        let raw = context.parameters.get("id") ?? ""
        guard let id = raw.removingPercentEncoding else {
            throw APIError.badRequest("The id in the path is not valid percent-encoding.", code: "bad_request")
        }
        guard (1...200).contains(id.count), let json = try await repository.syncRow(table, id: id, tenant: tenant) else {
            throw APIError.notFound("No \(table.rawValue) row \(id.prefix(64)).")
        }
        return jsonResponse(json)
    }

    // MARK: Mappings

    @Sendable func mappings(request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try await requireAdmin(request)
        let status = try await repository.syncStatus(tenant: tenant)
        // The status document holds the mappings; answer just them.
        let object = try JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any]
        let data = try JSONSerialization.data(withJSONObject: ["mappings": object?["mappings"] ?? []], options: [.sortedKeys])
        return jsonResponse(String(decoding: data, as: UTF8.self))
    }

    struct MappingsBody: Decodable {
        struct Mapping: Decodable {
            let sourceTable: String
            let targetTable: String
            let keyColumn: String?
            enum CodingKeys: String, CodingKey { case sourceTable = "source_table", targetTable = "target_table", keyColumn = "key_column" }
        }
        let mappings: [Mapping]
    }

    @Sendable func replaceMappings(request: Request, context: AppRequestContext) async throws -> Response {
        let tenant = try await requireAdmin(request)
        let body = try await request.decodeJSON(MappingsBody.self)
        guard body.mappings.count <= 100 else {
            throw APIError.invalid("mappings: at most 100.", field: "mappings", index: nil)
        }
        var seen = Set<String>()
        let mappings = try body.mappings.enumerated().map { index, mapping in
            guard (1...200).contains(mapping.sourceTable.count), seen.insert(mapping.sourceTable).inserted else {
                throw APIError.invalid("source_table: 1 to 200 characters, each source table once.", field: "source_table", index: index)
            }
            guard let target = SyncTable(rawValue: mapping.targetTable) else {
                throw APIError.invalid("target_table: must be one of \(SyncTable.allCases.map(\.rawValue).joined(separator: ", ")).",
                                       field: "target_table", index: index)
            }
            let key = mapping.keyColumn ?? "id"
            guard (1...200).contains(key.count) else {
                throw APIError.invalid("key_column: 1 to 200 characters.", field: "key_column", index: index)
            }
            return (source: mapping.sourceTable, target: target, key: key)
        }
        try await repository.replaceSyncMappings(mappings, tenant: tenant)
        return try await self.mappings(request: request, context: context)
    }

    // MARK: Access and parameters

    /// Business data is for the tenant's staff: admins, dispatchers and viewers; a sync key may
    /// read status too. Drivers and devices may not.
    private func reader(_ request: Request) async throws -> TenantID {
        if let key = request.headers[.apiKey], key.hasPrefix("pgs_") { return try await writer(request) }
        let principal = try await authenticator.authenticate(request)
        guard case .user(let user) = principal, user.role != .driver else {
            throw APIError.forbidden("Sync tables are readable by admins, dispatchers and viewers.")
        }
        return user.tenant
    }

    private func requireAdmin(_ request: Request) async throws -> TenantID {
        if let key = request.headers[.apiKey], key.hasPrefix("pgs_") {
            // A valid sync key is known but not allowed here (403); an unknown one is 401.
            _ = try await writer(request)
            throw APIError.forbidden("A sync API key may post change events and read sync tables and status; this needs an admin.")
        }
        let principal = try await authenticator.authenticate(request)
        guard case .user(let user) = principal, user.role == .admin else {
            throw APIError.forbidden("This needs an admin (or, for posting changes, a sync API key).")
        }
        return user.tenant
    }

    static func table(_ raw: String?) throws -> SyncTable {
        guard let raw, let table = SyncTable(rawValue: raw) else {
            throw APIError.notFound("No sync table \((raw ?? "").prefix(64)); tables are \(SyncTable.allCases.map(\.rawValue).joined(separator: ", ")).")
        }
        return table
    }

    static func limit(_ raw: String?) throws -> Int {
        guard let raw else { return 100 }
        guard let limit = Int(raw), (1...1_000).contains(limit) else {
            throw APIError.invalid("limit: must be an integer from 1 to 1000.", field: "limit", index: nil)
        }
        return limit
    }

    static func flag(_ raw: String?, name: String) throws -> Bool {
        switch raw {
        case nil, "false", "0": return false
        case "true", "1": return true
        default: throw APIError.invalid("\(name): must be true or false.", field: name, index: nil)
        }
    }
}
