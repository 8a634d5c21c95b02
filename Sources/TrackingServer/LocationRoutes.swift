import Foundation
import Hummingbird
import NIOCore
import TrackingCore
import TrackingStore

/// `POST /api/v1/locations` and `GET /api/v1/devices/{id}/position`.
struct LocationRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let validator: PositionValidator
    let ingest: IngestCoalescer

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/locations", use: postLocations)
        router.get("/api/v1/devices/:id/position", use: latestPosition)
    }

    /// Devices post for themselves; a driver posts for the device linked to them.
    @Sendable func postLocations(request: Request, context: AppRequestContext) async throws -> Response {
        let device = try await postingDevice(try await authenticator.authenticate(request))
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: ServerConfiguration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(status: 413, code: "payload_too_large",
                           message: "The body is larger than 1 MiB; send at most \(PositionValidator.maxBatchSize) positions per request.")
        }
        let positions = try validator.decodeBody(body.readableBytesView)
        // {"accepted", "filtered", "dropped", "filter_reasons"}: the tenant's fix filters may flag or drop some.
        return try encodedResponse(try await ingest.insert(positions, device: device), status: .accepted)
    }

    /// The latest position of a device the caller may see; any other answers 404 like a missing one.
    @Sendable func latestPosition(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        let filter = authenticator.visibility(of: principal)
        let idText = context.parameters.get("id") ?? ""
        guard let id = UUID(uuidString: idText),
              let (audience, json) = try await repository.latestPosition(device: id, tenant: principal.tenant),
              filter.allows(audience)
        else {
            throw APIError.notFound("No position for device \(idText.prefix(64)).")
        }
        return jsonResponse(json)
    }

    private func postingDevice(_ principal: Principal) async throws -> DeviceIdentity {
        switch principal {
        case .device(let device):
            return device
        case .user(let user):
            guard user.role == .driver else {
                throw APIError.forbidden("Only devices and drivers post positions; you are \(user.role.rawValue).")
            }
            guard let id = user.deviceID, let device = try await repository.device(id, tenant: user.tenant) else {
                // deviceID is read from the users row on this request, so an unlinked driver stops here.
                throw APIError.forbidden("No device is linked to this driver; an admin links one with device_id.")
            }
            return DeviceIdentity(id: device.id, tenant: user.tenant, name: device.name, group: device.group, grade: device.grade)
        }
    }
}
