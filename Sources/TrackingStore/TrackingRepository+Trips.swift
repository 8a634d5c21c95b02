import Foundation
import PostgresNIO
import TrackingCore

/// How a trip ends.
public enum TripEnd: String, Sendable {
    case completed, cancelled
}

/// What a lifecycle call did (the `pgtrack_trip_outcome` of SQL/060_trips.sql).
public struct TripOutcome: Sendable, Equatable {
    public enum Kind: String, Sendable {
        /// Done: the trip was created or changed status, and a `status` event was logged.
        case created, changed
        /// Already so: an idempotent repeat.
        case unchanged
        /// Not allowed from the current status, or the booking belongs to another device.
        case conflict
        /// The device runs another trip (`other` names its booking).
        case deviceBusy = "device_busy"
        /// No such trip (or, for accept, no such device).
        case notFound = "not_found"
    }

    public let kind: Kind
    public let status: String?
    /// The trip as JSON, when there is one.
    public let json: String?
    public let other: String?

    public var succeeded: Bool { kind == .created || kind == .changed || kind == .unchanged }
}

/// A trip as stored: its JSON and who it is about, so callers check visibility before showing it.
public struct TripRecord: Sendable, Equatable {
    public let booking: BookingID
    public let status: String
    public let audience: EventAudience
    public let json: String
}

/// One step of a batch from `POST /api/v1/events`.
public enum TripCommand: Sendable {
    case accept(BookingID, device: UUID)
    case finish(BookingID, TripEnd)
    case record(ValidatedPosition, device: UUID)
}

/// A batch step whose outcome was not a success; the whole batch was rolled back.
public struct TripCommandFailed: Error, Sendable {
    public let index: Int
    public let outcome: TripOutcome
}

/// The per-tenant settings new trips copy.
public struct TripSettings: Sendable, Equatable, Codable {
    public var jitterMetres: Double
    public var stopRadiusMetres: Double
    public var stopSeconds: Int

    public init(jitterMetres: Double, stopRadiusMetres: Double, stopSeconds: Int) {
        self.jitterMetres = jitterMetres
        self.stopRadiusMetres = stopRadiusMetres
        self.stopSeconds = stopSeconds
    }

    enum CodingKeys: String, CodingKey {
        case jitterMetres = "trip_jitter_metres", stopRadiusMetres = "trip_stop_radius_metres", stopSeconds = "trip_stop_seconds"
    }
}

extension TrackingRepository {
    // MARK: Lifecycle

    public func acceptTrip(_ booking: BookingID, device: UUID, tenant: TenantID) async throws -> TripOutcome {
        try await withTenant(tenant) { connection in
            try await acceptTrip(booking, device: device, tenant: tenant, on: connection)
        }
    }

    public func finishTrip(_ booking: BookingID, as end: TripEnd, tenant: TenantID) async throws -> TripOutcome {
        try await withTenant(tenant) { connection in
            try await finishTrip(booking, as: end, tenant: tenant, on: connection)
        }
    }

    /// Applies a batch in one transaction: every step or none. Throws `TripCommandFailed` for the
    /// first step that does not succeed.
    public func apply(_ commands: [TripCommand], tenant: TenantID) async throws -> [TripOutcome?] {
        try await withTenant(tenant) { connection in
            var outcomes: [TripOutcome?] = []
            for (index, command) in commands.enumerated() {
                switch command {
                case .accept(let booking, let device):
                    let outcome = try await acceptTrip(booking, device: device, tenant: tenant, on: connection)
                    guard outcome.succeeded else { throw TripCommandFailed(index: index, outcome: outcome) }
                    outcomes.append(outcome)
                case .finish(let booking, let end):
                    let outcome = try await finishTrip(booking, as: end, tenant: tenant, on: connection)
                    guard outcome.succeeded else { throw TripCommandFailed(index: index, outcome: outcome) }
                    outcomes.append(outcome)
                case .record(let position, let device):
                    try await insertPositions([position], device: device, tenant: tenant, on: connection)
                    outcomes.append(nil)
                }
            }
            return outcomes
        }
    }

    private func acceptTrip(_ booking: BookingID, device: UUID, tenant: TenantID, on connection: PostgresConnection) async throws -> TripOutcome {
        try await outcome(of: connection.query("""
            SELECT o.outcome, o.status, o.trip::text, o.other
              FROM pgtrack_trip_accept(\(tenant.rawValue), \(booking.rawValue), \(device)) o
            """, logger: logger))
    }

    private func finishTrip(_ booking: BookingID, as end: TripEnd, tenant: TenantID, on connection: PostgresConnection) async throws -> TripOutcome {
        try await outcome(of: connection.query("""
            SELECT o.outcome, o.status, o.trip::text, o.other
              FROM pgtrack_trip_finish(\(tenant.rawValue), \(booking.rawValue), \(end.rawValue)) o
            """, logger: logger))
    }

    private func outcome(of rows: PostgresRowSequence) async throws -> TripOutcome {
        var result: TripOutcome?
        for try await (kind, status, json, other) in rows.decode((String, String?, String?, String?).self) {
            guard let kind = TripOutcome.Kind(rawValue: kind) else { throw APIError.unavailable("unexpected trip outcome \(kind)") }
            result = TripOutcome(kind: kind, status: status, json: json, other: other)
        }
        guard let result else { throw APIError.unavailable("the trip function returned nothing") }
        return result
    }

    // MARK: Reading

    public func trip(_ booking: BookingID, tenant: TenantID) async throws -> TripRecord? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT t.status, t.device_id, d.group_name, d.grade, pgtrack_trip_json(t)::text
                  FROM trips t JOIN devices d ON d.id = t.device_id
                 WHERE t.tenant_id = \(tenant.rawValue) AND t.booking_id = \(booking.rawValue)
                """, logger: logger)
            var found: TripRecord?
            for try await (status, device, group, grade, json) in rows.decode((String, UUID, String, Int, String).self) {
                found = TripRecord(booking: booking, status: status, audience: EventAudience(device: device, group: group, grade: grade), json: json)
            }
            return found
        }
    }

    /// The trip's track as a GeoJSON FeatureCollection built by PostGIS: a LineString of the
    /// points in (fix time, id) order (null geometry below two points), simplified with
    /// Douglas–Peucker to `simplifyMetres` in the local UTM zone when given, and with
    /// `includePoints` one Point feature per stored waypoint. Coordinates have 6 decimals.
    public func routeGeoJSON(of trip: TripRecord, tenant: TenantID, includePoints: Bool, simplifyMetres: Double?) async throws -> String {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                WITH pts AS (
                    SELECT p.id, p.fix_time, p.location::geometry AS g, p.speed, p.heading, p.altitude, p.accuracy
                      FROM positions p
                     WHERE p.tenant_id = \(tenant.rawValue) AND p.booking_id = \(trip.booking.rawValue)
                       AND p.device_id = \(trip.audience.device) AND p.filter_reason IS NULL
                ), line AS (
                    SELECT ST_MakeLine(g ORDER BY fix_time, id) AS g, count(*) AS n,
                           min(fix_time) AS t0, max(fix_time) AS t1 FROM pts
                ), shaped AS (
                    SELECT n, t0, t1,
                           CASE WHEN \(simplifyMetres)::float8 > 0 AND ST_NPoints(g) > 2 THEN
                               ST_Transform(ST_Simplify(ST_Transform(g, utm), \(simplifyMetres)::float8, true), 4326)
                           ELSE g END AS g
                      FROM line,
                           LATERAL (SELECT CASE WHEN ST_Y(ST_Centroid(line.g)) >= 0 THEN 32600 ELSE 32700 END
                                           + least(60, greatest(1, floor((ST_X(ST_Centroid(line.g)) + 180) / 6)::int + 1)) AS utm) zone
                )
                SELECT '{"type":"FeatureCollection","features":['
                       || json_build_object(
                              'type', 'Feature',
                              'geometry', CASE WHEN ST_NPoints(s.g) >= 2 THEN ST_AsGeoJSON(s.g, 6)::json END,
                              'properties', json_strip_nulls(json_build_object(
                                  'booking_id', \(trip.booking.rawValue)::text,
                                  'device_id', \(trip.audience.device)::uuid,
                                  'status', \(trip.status)::text,
                                  'point_count', s.n,
                                  'line_point_count', coalesce(ST_NPoints(s.g), 0),
                                  'simplify_metres', \(simplifyMetres)::float8,
                                  'start', pgtrack_iso_time(s.t0),
                                  'end', pgtrack_iso_time(s.t1))))::text
                       || CASE WHEN \(includePoints) THEN coalesce((
                              SELECT ',' || string_agg(json_build_object(
                                         'type', 'Feature',
                                         'geometry', ST_AsGeoJSON(pts.g, 6)::json,
                                         'properties', json_strip_nulls(json_build_object(
                                             'timestamp', pgtrack_iso_time(pts.fix_time), 'speed', pts.speed,
                                             'heading', pts.heading, 'altitude', pts.altitude, 'accuracy', pts.accuracy))
                                     )::text, ',' ORDER BY pts.fix_time, pts.id)
                                FROM pts), '') ELSE '' END
                       || ']}'
                  FROM shaped s
                """, logger: logger)
            var geojson = #"{"type":"FeatureCollection","features":[]}"#
            for try await text in rows.decode(String.self) { geojson = text }
            return geojson
        }
    }

    /// Waypoints of a trip in track order, from `after` (exclusive), within `[from, to)`, at most `limit`.
    public func routePoints(of trip: TripRecord, tenant: TenantID, after cursor: PointCursor? = nil,
                            from: Date? = nil, to: Date? = nil, limit: Int = Int(Int32.max)) async throws -> [(RoutePoint, PointCursor)] {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT p.id, p.fix_time, (extract(epoch FROM p.fix_time) * 1000000)::bigint,
                       ST_Y(p.location::geometry), ST_X(p.location::geometry),
                       p.speed, p.heading, p.altitude, p.accuracy
                  FROM positions p
                 WHERE p.tenant_id = \(tenant.rawValue) AND p.booking_id = \(trip.booking.rawValue)
                   AND p.device_id = \(trip.audience.device) AND p.filter_reason IS NULL
                   AND (\(from)::timestamptz IS NULL OR p.fix_time >= \(from))
                   AND (\(to)::timestamptz IS NULL OR p.fix_time < \(to))
                   AND (\(cursor?.id)::bigint IS NULL
                        OR (p.fix_time, p.id) > (timestamptz 'epoch' + \(cursor?.fixTimeMicros)::bigint * interval '1 microsecond',
                                                 \(cursor?.id)::bigint))
                 ORDER BY p.fix_time, p.id
                 LIMIT \(limit)
                """, logger: logger)
            var points: [(RoutePoint, PointCursor)] = []
            for try await (id, time, micros, lat, lon, speed, heading, altitude, accuracy)
                in rows.decode((Int64, Date, Int64, Double, Double, Double?, Double?, Double?, Double?).self) {
                points.append((RoutePoint(id: id, fixTime: time, latitude: lat, longitude: lon, speed: speed, heading: heading,
                                          altitude: altitude, accuracy: accuracy),
                               PointCursor(fixTimeMicros: micros, id: id)))
            }
            return points
        }
    }

    // MARK: Settings

    public func tripSettings(tenant: TenantID) async throws -> TripSettings? {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT trip_jitter_metres, trip_stop_radius_metres, trip_stop_seconds FROM tenants WHERE id = \(tenant.rawValue)
                """, logger: logger)
            var settings: TripSettings?
            for try await (jitter, radius, seconds) in rows.decode((Double, Double, Int).self) {
                settings = TripSettings(jitterMetres: jitter, stopRadiusMetres: radius, stopSeconds: seconds)
            }
            return settings
        }
    }

    /// Stores new settings (the caller validated them); trips accepted from now on use them.
    public func updateTripSettings(_ settings: TripSettings, tenant: TenantID) async throws {
        try await withTenant(tenant) { connection in
            _ = try await connection.query("""
                UPDATE tenants SET trip_jitter_metres = \(settings.jitterMetres),
                       trip_stop_radius_metres = \(settings.stopRadiusMetres), trip_stop_seconds = \(settings.stopSeconds)
                 WHERE id = \(tenant.rawValue)
                """, logger: logger)
        }
    }
}
