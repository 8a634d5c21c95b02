import HTTPTypes
import Hummingbird
import TrackingCore
import TrackingStore

/// Authenticates devices by `X-API-Key` (or `?api_key=`, for browsers' EventSource, which
/// cannot set headers).
struct DeviceAuthenticator: Sendable {
    let repository: TrackingRepository

    func authenticate(_ request: Request) async throws -> DeviceIdentity {
        let key = request.headers[HTTPField.Name("X-API-Key")!] ?? request.uri.queryParameters.get("api_key")
        guard let key, !key.isEmpty else {
            throw APIError.unauthorized("Missing API key: send the device key in the X-API-Key header.")
        }
        guard let device = try await repository.authenticateDevice(apiKey: key) else {
            throw APIError.unauthorized("Invalid API key.")
        }
        return device
    }
}
