import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// `/api/v1/devices`: create, list, read and delete devices; issue, list and revoke their API
/// keys; remove a marker or purge a device's history. Everything is scoped to the caller's
/// tenant: another tenant's device answers 404 exactly like a missing one.
struct DeviceRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/devices", use: create)
        router.get("/api/v1/devices", use: list)
        router.get("/api/v1/devices/:id", use: show)
        router.patch("/api/v1/devices/:id", use: update)
        router.delete("/api/v1/devices/:id", use: delete)
        router.get("/api/v1/devices/:id/keys", use: keys)
        router.post("/api/v1/devices/:id/keys", use: createKey)
        router.delete("/api/v1/devices/:id/keys/:keyID", use: revokeKey)
        router.delete("/api/v1/devices/:id/position", use: removeMarker)
        router.post("/api/v1/devices/:id/purge", use: purge)
    }

    struct NewDevice: Decodable {
        let name: String
        let group: String?
        let grade: Int?
        /// The device's id in device protocols (Traccar uniqueId, OsmAnd id).
        let uniqueID: String?
        enum CodingKeys: String, CodingKey { case name, group, grade, uniqueID = "unique_id" }
    }

    static func parseUniqueID(_ text: String?) throws -> DeviceUniqueID? {
        guard let text else { return nil }
        guard let id = DeviceUniqueID(text) else {
            throw APIError.invalid("unique_id must be \(DeviceUniqueID.rule)", field: "unique_id", index: nil)
        }
        return id
    }

    struct CreatedDevice: Encodable {
        let device: DeviceRecord
        let apiKey: String
        enum CodingKeys: String, CodingKey { case device, apiKey = "api_key" }
    }

    struct CreatedKey: Encodable {
        let key: DeviceKeyRecord
        let apiKey: String
        enum CodingKeys: String, CodingKey { case key, apiKey = "api_key" }
    }

    struct NewKey: Decodable {
        /// Keep the device's other keys working (a rotation with overlap); by default they are revoked.
        let keepExisting: Bool?
        enum CodingKeys: String, CodingKey { case keepExisting = "keep_existing" }
    }

    @Sendable func create(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "create devices")
        let body = try await request.decodeJSON(NewDevice.self)
        let name = body.name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...200).contains(name.count) else { throw APIError.invalid("name must be 1–200 characters", field: "name", index: nil) }
        let group = body.group ?? "default"
        guard (1...100).contains(group.count) else { throw APIError.invalid("group must be 1–100 characters", field: "group", index: nil) }
        let grade = body.grade ?? 0
        guard (0...1_000).contains(grade) else { throw APIError.invalid("grade must be 0–1000", field: "grade", index: nil) }
        let uniqueID = try Self.parseUniqueID(body.uniqueID)
        let (identity, key) = try await repository.createDevice(tenant: admin.tenant, name: name, group: group, grade: grade,
                                                                uniqueID: uniqueID)
        guard let record = try await repository.device(identity.id, tenant: admin.tenant) else {
            throw APIError(status: 500, code: "internal", message: "the new device could not be read back")
        }
        return try encodedResponse(CreatedDevice(device: record, apiKey: key), status: .created)
    }

    /// Admins and dispatchers list every device; viewers and drivers the devices they may see.
    @Sendable func list(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        _ = try principal.requireUser(Set(Role.allCases), to: "list devices")
        let filter = authenticator.visibility(of: principal)
        let devices = try await repository.devices(tenant: principal.tenant).filter { filter.allows($0.audience) }
        return try encodedResponse(["devices": devices])
    }

    @Sendable func show(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        _ = try principal.requireUser(Set(Role.allCases), to: "read devices")
        let filter = authenticator.visibility(of: principal)
        let id = try request.uuidParameter("id", context: context, resource: "device")
        guard let device = try await repository.device(id, tenant: principal.tenant), filter.allows(device.audience) else {
            throw APIError.notFound("No device \(id.uuidString.lowercased()).")
        }
        return try encodedResponse(device)
    }

    /// Sets or clears the device's unique id: `{"unique_id": "356938035643809"}` or `{"unique_id": null}`.
    @Sendable func update(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "change devices")
        let id = try request.uuidParameter("id", context: context, resource: "device")
        let change = try await request.decodeJSON([String: JSONValue].self)
        let uniqueID: DeviceUniqueID?
        switch change["unique_id"] {
        case .null?: uniqueID = nil
        case .string(let text)?: uniqueID = try Self.parseUniqueID(text)
        default: throw APIError.invalid("unique_id: send a string (\(DeviceUniqueID.rule)) or null to clear it", field: "unique_id", index: nil)
        }
        if let other = change.keys.first(where: { $0 != "unique_id" }) {
            throw APIError.invalid("\(other): cannot be changed; only unique_id can", field: other, index: nil)
        }
        guard try await repository.setUniqueID(uniqueID, device: id, tenant: admin.tenant) != nil,
              let record = try await repository.device(id, tenant: admin.tenant)
        else {
            throw APIError.notFound("No device \(id.uuidString.lowercased()).")
        }
        return try encodedResponse(record)
    }

    @Sendable func delete(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "delete devices")
        let id = try request.uuidParameter("id", context: context, resource: "device")
        guard try await repository.deleteDevice(id, tenant: admin.tenant) else {
            throw APIError.notFound("No device \(id.uuidString.lowercased()).")
        }
        return jsonResponse(#"{"deleted":true}"#)
    }

    @Sendable func keys(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "manage API keys")
        let id = try request.uuidParameter("id", context: context, resource: "device")
        guard let keys = try await repository.keys(device: id, tenant: admin.tenant) else {
            throw APIError.notFound("No device \(id.uuidString.lowercased()).")
        }
        return try encodedResponse(["keys": keys])
    }

    @Sendable func createKey(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "manage API keys")
        let id = try request.uuidParameter("id", context: context, resource: "device")
        let keepExisting = try await request.decodeOptionalJSON(NewKey.self)?.keepExisting ?? false
        guard let (record, key) = try await repository.createKey(device: id, tenant: admin.tenant, revokeOthers: !keepExisting) else {
            throw APIError.notFound("No device \(id.uuidString.lowercased()).")
        }
        return try encodedResponse(CreatedKey(key: record, apiKey: key), status: .created)
    }

    @Sendable func revokeKey(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "manage API keys")
        let id = try request.uuidParameter("id", context: context, resource: "device")
        let keyID = try request.uuidParameter("keyID", context: context, resource: "key")
        guard let changed = try await repository.revokeKey(keyID, device: id, tenant: admin.tenant) else {
            throw APIError.notFound("No key \(keyID.uuidString.lowercased()) on device \(id.uuidString.lowercased()).")
        }
        return jsonResponse(#"{"revoked":true,"was_active":\#(changed)}"#)
    }

    /// Removes the live marker; the history stays. Idempotent.
    @Sendable func removeMarker(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await authenticator.authenticate(request).requireUser([.admin, .dispatcher], to: "remove markers")
        let id = try request.uuidParameter("id", context: context, resource: "device")
        switch try await repository.removeMarker(device: id, tenant: user.tenant) {
        case .removed(let seq): return jsonResponse(#"{"removed":true,"seq":\#(seq)}"#)
        case .noMarker: return jsonResponse(#"{"removed":false}"#)
        case .noDevice: throw APIError.notFound("No device \(id.uuidString.lowercased()).")
        }
    }

    /// Removes the marker and every stored position of the device; the device and its keys stay.
    @Sendable func purge(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "purge device history")
        let id = try request.uuidParameter("id", context: context, resource: "device")
        guard let deleted = try await repository.purgeDevice(id, tenant: admin.tenant) else {
            throw APIError.notFound("No device \(id.uuidString.lowercased()).")
        }
        return jsonResponse(#"{"purged":true,"positions_deleted":\#(deleted)}"#)
    }
}
