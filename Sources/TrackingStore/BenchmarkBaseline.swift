import Foundation
import Logging
import PostgresNIO
import TrackingCore

/// The raw-PostgreSQL side of `pgtrack bench`: the same positions written straight to the
/// database as the table owner, through the same triggers (change log, latest position,
/// NOTIFY), with no HTTP, no authentication and no per-tenant transaction around them. What
/// pgtrack adds on top is measured against this.
public struct BenchmarkBaseline: Sendable {
    public let client: PostgresClient
    public let logger: Logger

    public init(client: PostgresClient, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// One row per statement, autocommit: the physical limit of a single-fix insert.
    public func insertOne(tenant: String, device: UUID, latitude: Double, longitude: Double, fixTime: Date,
                          speed: Double, heading: Double, attributesJSON: String) async throws {
        _ = try await client.query("""
            INSERT INTO positions (tenant_id, device_id, fix_time, location, speed, heading, attributes)
            VALUES (\(tenant), \(device), \(fixTime), ST_SetSRID(ST_MakePoint(\(longitude), \(latitude)), 4326)::geography,
                    \(speed), \(heading), \(attributesJSON)::jsonb)
            """, logger: logger)
    }

    /// Many rows of one device in one statement (a JSON array of {lat, lon, t, speed, heading, attributes}).
    public func insertBatch(tenant: String, device: UUID, rowsJSON: String) async throws {
        _ = try await client.query("""
            INSERT INTO positions (tenant_id, device_id, fix_time, location, speed, heading, attributes)
            SELECT \(tenant), \(device), to_timestamp(p.t), ST_SetSRID(ST_MakePoint(p.lon, p.lat), 4326)::geography,
                   p.speed, p.heading, p.attributes
              FROM ROWS FROM (jsonb_to_recordset(\(rowsJSON)::jsonb) AS (
                       lat float8, lon float8, t float8, speed float8, heading float8, attributes jsonb))
                   WITH ORDINALITY AS p(lat, lon, t, speed, heading, attributes, ord)
             ORDER BY p.ord
            """, logger: logger)
    }

    /// Creates `count` devices of `tenant` without API keys (bench fixtures); returns their ids.
    public func createDevices(tenant: String, count: Int, prefix: String) async throws -> [UUID] {
        let rows = try await client.query("""
            INSERT INTO devices (tenant_id, name, group_name, grade)
            SELECT \(tenant), \(prefix) || g, 'fleet', 0 FROM generate_series(1, \(count)) AS g
            RETURNING id
            """, logger: logger)
        var ids: [UUID] = []
        for try await id in rows.decode(UUID.self) { ids.append(id) }
        return ids
    }

    /// One position for each device, in batches of 500 rows per statement.
    public func seedLatestPositions(tenant: String, devices: [UUID], center: (lat: Double, lon: Double)) async throws {
        for start in stride(from: 0, to: devices.count, by: 500) {
            let slice = Array(devices[start..<min(start + 500, devices.count)])
            let ids = slice.map { $0.uuidString.lowercased() }
            let lats = slice.indices.map { center.lat + Double($0 % 100) * 0.001 }
            let lons = slice.indices.map { center.lon + Double($0 / 100) * 0.001 }
            _ = try await client.query("""
                INSERT INTO positions (tenant_id, device_id, fix_time, location, speed, heading, attributes)
                SELECT \(tenant), d::uuid, now(), ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography, 8.5, 90, '{}'::jsonb
                  FROM unnest(\(ids)::text[], \(lats)::float8[], \(lons)::float8[]) AS u(d, lat, lon)
                """, logger: logger)
        }
    }

    /// The NOTIFY channel the triggers ring for a tenant.
    public static func tenantChannel(_ tenant: TenantID) -> String { BusTopic.tenant(tenant).channel }
}
