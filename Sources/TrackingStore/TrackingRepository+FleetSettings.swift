import Foundation
import PostgresNIO
import TrackingCore

/// A tenant's fleet settings (SQL/100_fleet.sql): geofences and ETA.
public struct FleetSettings: Sendable, Equatable, Codable {
    /// Geofence radius of a customer without its own.
    public var defaultRadiusMetres: Double
    /// How far beyond the radius a driver must be before a completed visit counts as departed.
    public var departureMarginMetres: Double
    /// The window of reported speeds the ETA averages.
    public var speedWindowSeconds: Int
    /// The speed the ETA assumes when the driver reports less (or none).
    public var etaFloorSpeed: Double

    public init(defaultRadiusMetres: Double, departureMarginMetres: Double, speedWindowSeconds: Int, etaFloorSpeed: Double) {
        self.defaultRadiusMetres = defaultRadiusMetres
        self.departureMarginMetres = departureMarginMetres
        self.speedWindowSeconds = speedWindowSeconds
        self.etaFloorSpeed = etaFloorSpeed
    }

    enum CodingKeys: String, CodingKey {
        case defaultRadiusMetres = "default_radius_metres", departureMarginMetres = "departure_margin_metres"
        case speedWindowSeconds = "speed_window_seconds", etaFloorSpeed = "eta_floor_speed"
    }
}

extension TrackingRepository {
    public func fleetSettings(tenant: TenantID) async throws -> FleetSettings? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT fleet_default_radius_metres, fleet_departure_margin_metres, fleet_speed_window_seconds, fleet_eta_floor_speed
                  FROM tenants WHERE id = \(tenant.rawValue)
                """, logger: logger)
            var settings: FleetSettings?
            for try await (radius, margin, window, floor) in rows.decode((Double, Double, Int, Double).self) {
                settings = FleetSettings(defaultRadiusMetres: radius, departureMarginMetres: margin, speedWindowSeconds: window,
                                         etaFloorSpeed: floor)
            }
            return settings
        }
    }

    /// Stores new settings (the caller validated them); the next fix uses them.
    public func updateFleetSettings(_ settings: FleetSettings, tenant: TenantID) async throws {
        try await withTenant(tenant) { connection in
            _ = try await connection.query("""
                UPDATE tenants SET fleet_default_radius_metres = \(settings.defaultRadiusMetres),
                       fleet_departure_margin_metres = \(settings.departureMarginMetres),
                       fleet_speed_window_seconds = \(settings.speedWindowSeconds),
                       fleet_eta_floor_speed = \(settings.etaFloorSpeed)
                 WHERE id = \(tenant.rawValue)
                """, logger: logger)
        }
    }
}
