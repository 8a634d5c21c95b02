import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// `GET|PUT /api/v1/settings/fleet`: geofence radius and departure margin, the ETA's speed
/// window and floor speed. Every user of the tenant reads them; admins change them.
struct FleetSettingsRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/settings/fleet", use: settings)
        router.put("/api/v1/settings/fleet", use: update)
    }

    /// All four, as numbers: a fractional speed_window_seconds is a 422 naming the field.
    struct Input: Decodable {
        let defaultRadiusMetres: Double
        let departureMarginMetres: Double
        let speedWindowSeconds: Double
        let etaFloorSpeed: Double
        enum CodingKeys: String, CodingKey {
            case defaultRadiusMetres = "default_radius_metres", departureMarginMetres = "departure_margin_metres"
            case speedWindowSeconds = "speed_window_seconds", etaFloorSpeed = "eta_floor_speed"
        }
    }

    @Sendable func settings(request: Request, context: AppRequestContext) async throws -> Response {
        try await authenticator.readSettings(request, roles: Set(Role.allCases), what: "fleet settings",
                                             load: repository.fleetSettings(tenant:))
    }

    /// Replaces the settings; the next fix uses them. The ranges are the table's CHECKs.
    @Sendable func update(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        _ = try principal.requireUser([.admin], to: "change fleet settings")
        let input = try await request.decodeJSON(Input.self)
        try Self.require(input.defaultRadiusMetres, in: 5...10_000, "default_radius_metres")
        try Self.require(input.departureMarginMetres, in: 0...5_000, "departure_margin_metres")
        try Self.require(input.speedWindowSeconds, in: 10...86_400, "speed_window_seconds")
        guard input.speedWindowSeconds.rounded() == input.speedWindowSeconds else {
            throw APIError.invalid("speed_window_seconds: must be a whole number of seconds.", field: "speed_window_seconds", index: nil)
        }
        guard input.etaFloorSpeed.isFinite, input.etaFloorSpeed > 0, input.etaFloorSpeed <= 100 else {
            throw APIError.invalid("eta_floor_speed: must be more than 0 and at most 100 (m/s).", field: "eta_floor_speed", index: nil)
        }
        let settings = FleetSettings(defaultRadiusMetres: input.defaultRadiusMetres, departureMarginMetres: input.departureMarginMetres,
                                     speedWindowSeconds: Int(input.speedWindowSeconds), etaFloorSpeed: input.etaFloorSpeed)
        try await repository.updateFleetSettings(settings, tenant: principal.tenant)
        return try encodedResponse(settings)
    }

    private static func require(_ value: Double, in range: ClosedRange<Double>, _ field: String) throws {
        guard value.isFinite, range.contains(value) else {
            throw APIError.invalid("\(field): must be \(range.lowerBound.formatted())–\(range.upperBound.formatted()).", field: field, index: nil)
        }
    }
}
