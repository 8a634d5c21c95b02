import Foundation
import Hummingbird
import NIOCore
import TrackingCore
import TrackingStore

/// `POST /api/v1/locations` and `GET /api/v1/devices/{id}/position`.
struct LocationRoutes {
    let repository: TrackingRepository
    let authenticator: DeviceAuthenticator
    let validator: PositionValidator

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/locations", use: postLocations)
        router.get("/api/v1/devices/:id/position", use: latestPosition)
    }

    @Sendable func postLocations(request: Request, context: AppRequestContext) async throws -> Response {
        let device = try await authenticator.authenticate(request)
        let body: ByteBuffer
        do {
            body = try await request.body.collect(upTo: ServerConfiguration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(status: 413, code: "payload_too_large",
                           message: "The body is larger than 1 MiB; send at most \(PositionValidator.maxBatchSize) positions per request.")
        }
        let positions = try validator.decodeBody(body.readableBytesView)
        let stored = try await repository.insertPositions(positions, device: device)
        return jsonResponse(#"{"accepted":\#(stored)}"#, status: .accepted)
    }

    @Sendable func latestPosition(request: Request, context: AppRequestContext) async throws -> Response {
        let device = try await authenticator.authenticate(request)
        let idText = context.parameters.get("id") ?? ""
        // Another tenant's device answers exactly like a missing one.
        guard let id = UUID(uuidString: idText),
              let json = try await repository.latestPosition(device: id, tenant: device.tenant)
        else {
            throw APIError.notFound("No position for device \(idText.prefix(64)).")
        }
        return jsonResponse(json)
    }
}
