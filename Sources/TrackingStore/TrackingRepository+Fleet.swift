import Foundation
import PostgresNIO
import TrackingCore

/// A driver, route or visit as stored: its JSON, and whose it is (the driver, and the driver's
/// device with its audience when linked), so callers check who may see it before showing it.
public struct FleetRecord: Sendable, Equatable {
    public let id: UUID
    public let driver: UUID
    /// The driver's device and its audience, when the driver has one.
    public let audience: EventAudience?
    public let status: String
    public let json: String
}

/// Fields of a driver; nil leaves a field unchanged on update. `device` is `.some(nil)` to unlink.
public struct DriverFields: Sendable {
    public var name: String?
    public var device: UUID??
    public var vehiclePlate: String??
    public var vehicleType: String??
    public var status: String?

    public init(name: String? = nil, device: UUID?? = nil, vehiclePlate: String?? = nil, vehicleType: String?? = nil, status: String? = nil) {
        self.name = name
        self.device = device
        self.vehiclePlate = vehiclePlate
        self.vehicleType = vehicleType
        self.status = status
    }
}

public struct RouteFields: Sendable {
    public var driver: UUID?
    public var name: String??
    /// `YYYY-MM-DD`, checked by the caller.
    public var scheduledDate: String?

    public init(driver: UUID? = nil, name: String?? = nil, scheduledDate: String? = nil) {
        self.driver = driver
        self.name = name
        self.scheduledDate = scheduledDate
    }
}

public struct VisitFields: Sendable {
    public var route: UUID?
    public var customer: String?
    public var sequence: Int?
    public var visitType: String?
    public var windowStart: Date??
    public var windowEnd: Date??
    public var notes: String??

    public init(route: UUID? = nil, customer: String? = nil, sequence: Int? = nil, visitType: String? = nil,
                windowStart: Date?? = nil, windowEnd: Date?? = nil, notes: String?? = nil) {
        self.route = route
        self.customer = customer
        self.sequence = sequence
        self.visitType = visitType
        self.windowStart = windowStart
        self.windowEnd = windowEnd
        self.notes = notes
    }
}

/// The outcome of a visit or route status change (SQL: pgtrack_visit_set_status, pgtrack_route_set_status).
public struct FleetStatusOutcome: Sendable, Equatable {
    /// changed, unchanged, conflict, driver_busy or not_found.
    public let outcome: String
    public let status: String?
    /// The one status allowed next, for a conflict.
    public let allowed: String?
    public let other: String?
    public let json: String?
}

/// One stored fix for playback.
public struct HistoryPoint: Sendable, Equatable {
    public let json: String
    public let cursor: PointCursor
}

/// Where driver and route history come from.
public enum HistorySource: Sendable {
    case device(UUID)
    case route(UUID)
}

extension TrackingRepository {
    // MARK: Drivers

    public func createDriver(_ fields: DriverFields, tenant: TenantID) async throws -> FleetRecord {
        try await fleetWrite {
            try await withTenant(tenant) { connection in
                try await fleetRecord(connection.query("""
                    WITH d AS (
                        INSERT INTO drivers (tenant_id, name, device_id, vehicle_plate, vehicle_type, status)
                        VALUES (\(tenant.rawValue), \(fields.name ?? ""), \(fields.device ?? nil), \(fields.vehiclePlate ?? nil),
                                \(fields.vehicleType ?? nil), coalesce(\(fields.status), 'active'))
                        RETURNING *)
                    SELECT d.id, d.id, dv.id, dv.group_name, dv.grade, d.status, pgtrack_driver_json(d)::text
                      FROM d LEFT JOIN devices dv ON dv.id = d.device_id
                    """, logger: logger))!
            }
        }
    }

    public func updateDriver(_ id: UUID, _ fields: DriverFields, tenant: TenantID) async throws -> FleetRecord? {
        try await fleetWrite {
            try await withTenant(tenant) { connection in
                try await fleetRecord(connection.query("""
                    WITH d AS (
                        UPDATE drivers SET
                               name = coalesce(\(fields.name), name),
                               device_id = CASE WHEN \(fields.device != nil) THEN \(fields.device ?? nil) ELSE device_id END,
                               vehicle_plate = CASE WHEN \(fields.vehiclePlate != nil) THEN \(fields.vehiclePlate ?? nil) ELSE vehicle_plate END,
                               vehicle_type = CASE WHEN \(fields.vehicleType != nil) THEN \(fields.vehicleType ?? nil) ELSE vehicle_type END,
                               status = coalesce(\(fields.status), status),
                               updated_at = now()
                         WHERE id = \(id) AND tenant_id = \(tenant.rawValue)
                        RETURNING *)
                    SELECT d.id, d.id, dv.id, dv.group_name, dv.grade, d.status, pgtrack_driver_json(d)::text
                      FROM d LEFT JOIN devices dv ON dv.id = d.device_id
                    """, logger: logger))
            }
        }
    }

    public func driver(_ id: UUID, tenant: TenantID) async throws -> FleetRecord? {
        try await drivers(tenant: tenant, only: id).first
    }

    /// Drivers of the tenant by name (or just `only`).
    public func drivers(tenant: TenantID, only: UUID? = nil) async throws -> [FleetRecord] {
        try await withTenant(tenant) { connection in
            try await fleetRecords(connection.query("""
                SELECT d.id, d.id, dv.id, dv.group_name, dv.grade, d.status, pgtrack_driver_json(d)::text
                  FROM drivers d LEFT JOIN devices dv ON dv.id = d.device_id
                 WHERE d.tenant_id = \(tenant.rawValue) AND (\(only)::uuid IS NULL OR d.id = \(only))
                 ORDER BY d.name, d.id
                """, logger: logger))
        }
    }

    // MARK: Routes

    public func createRoute(_ fields: RouteFields, tenant: TenantID) async throws -> FleetRecord {
        try await fleetWrite {
            try await withTenant(tenant) { connection in
                try await fleetRecord(connection.query("""
                    WITH r AS (
                        INSERT INTO routes (tenant_id, driver_id, name, scheduled_date)
                        VALUES (\(tenant.rawValue), \(fields.driver), \(fields.name ?? nil), \(fields.scheduledDate)::date)
                        RETURNING *)
                    SELECT r.id, r.driver_id, dv.id, dv.group_name, dv.grade, r.status, pgtrack_route_json(r)::text
                      FROM r JOIN drivers d ON d.id = r.driver_id LEFT JOIN devices dv ON dv.id = d.device_id
                    """, logger: logger))!
            }
        }
    }

    public func updateRoute(_ id: UUID, _ fields: RouteFields, tenant: TenantID) async throws -> FleetRecord? {
        try await fleetWrite {
            try await withTenant(tenant) { connection in
                try await fleetRecord(connection.query("""
                    WITH r AS (
                        UPDATE routes SET
                               driver_id = coalesce(\(fields.driver), driver_id),
                               name = CASE WHEN \(fields.name != nil) THEN \(fields.name ?? nil) ELSE name END,
                               scheduled_date = coalesce(\(fields.scheduledDate)::date, scheduled_date)
                         WHERE id = \(id) AND tenant_id = \(tenant.rawValue)
                        RETURNING *)
                    SELECT r.id, r.driver_id, dv.id, dv.group_name, dv.grade, r.status, pgtrack_route_json(r)::text
                      FROM r JOIN drivers d ON d.id = r.driver_id LEFT JOIN devices dv ON dv.id = d.device_id
                    """, logger: logger))
            }
        }
    }

    public func route(_ id: UUID, tenant: TenantID) async throws -> FleetRecord? {
        try await routes(tenant: tenant, only: id).first
    }

    /// Which routes to list: all, one, a driver's (optionally only the one in progress or only today's).
    public enum RouteSelection: Sendable {
        case all, one(UUID), driver(UUID), active(UUID), today(UUID)
    }

    public func routes(tenant: TenantID, only: UUID) async throws -> [FleetRecord] {
        try await routes(tenant: tenant, selecting: .one(only))
    }

    public func routes(tenant: TenantID, selecting selection: RouteSelection) async throws -> [FleetRecord] {
        var one: UUID?, driver: UUID?, activeOnly = false, todayOnly = false
        switch selection {
        case .all: break
        case .one(let id): one = id
        case .driver(let id): driver = id
        case .active(let id): driver = id; activeOnly = true
        case .today(let id): driver = id; todayOnly = true
        }
        return try await withTenant(tenant) { connection in
            try await fleetRecords(connection.query("""
                SELECT r.id, r.driver_id, dv.id, dv.group_name, dv.grade, r.status, pgtrack_route_json(r)::text
                  FROM routes r JOIN drivers d ON d.id = r.driver_id LEFT JOIN devices dv ON dv.id = d.device_id
                 WHERE r.tenant_id = \(tenant.rawValue)
                   AND (\(one)::uuid IS NULL OR r.id = \(one))
                   AND (\(driver)::uuid IS NULL OR r.driver_id = \(driver))
                   AND (NOT \(activeOnly) OR r.status = 'in_progress')
                   AND (NOT \(todayOnly) OR r.scheduled_date = current_date)
                 ORDER BY r.scheduled_date DESC, r.created_at DESC, r.id
                 LIMIT 1000
                """, logger: logger))
        }
    }

    public func setRouteStatus(_ id: UUID, to status: String, tenant: TenantID) async throws -> FleetStatusOutcome {
        try await withTenant(tenant) { connection in
            try await statusOutcome(connection.query("""
                SELECT o::text FROM pgtrack_route_set_status(\(tenant.rawValue), \(id), \(status)) o
                """, logger: logger), key: "route")
        }
    }

    // MARK: Visits

    public func createVisit(_ fields: VisitFields, tenant: TenantID) async throws -> FleetRecord {
        try await fleetWrite {
            try await withTenant(tenant) { connection in
                // The customer must be one the sync tables know (and not deleted).
                let known = try await connection.query("""
                    SELECT 1 FROM sync.customers WHERE tenant_id = \(tenant.rawValue) AND id = \(fields.customer ?? "") AND NOT deleted
                    """, logger: logger)
                var found = false
                for try await _ in known { found = true }
                guard found else {
                    throw APIError.invalid("customer_id: no synced customer \(fields.customer ?? "") in your tenant (see /api/v1/sync/customers).",
                                           field: "customer_id", index: nil)
                }
                return try await visitRecord(connection.query("""
                    WITH v AS (
                        INSERT INTO visits (tenant_id, route_id, customer_id, sequence, visit_type, window_start, window_end, notes)
                        VALUES (\(tenant.rawValue), \(fields.route), \(fields.customer), \(fields.sequence),
                                coalesce(\(fields.visitType), 'delivery'), \(fields.windowStart ?? nil), \(fields.windowEnd ?? nil),
                                \(fields.notes ?? nil))
                        RETURNING *)
                    SELECT v.id, r.driver_id, dv.id, dv.group_name, dv.grade, v.status, pgtrack_visit_json(v)::text
                      FROM v JOIN routes r ON r.id = v.route_id JOIN drivers d ON d.id = r.driver_id
                      LEFT JOIN devices dv ON dv.id = d.device_id
                    """, logger: logger))!
            }
        }
    }

    /// Changes a visit's plan (not its status: see setVisitStatus).
    public func updateVisit(_ id: UUID, _ fields: VisitFields, tenant: TenantID) async throws -> FleetRecord? {
        try await fleetWrite {
            try await withTenant(tenant) { connection in
                try await visitRecord(connection.query("""
                    WITH v AS (
                        UPDATE visits SET
                               sequence = coalesce(\(fields.sequence), sequence),
                               visit_type = coalesce(\(fields.visitType), visit_type),
                               window_start = CASE WHEN \(fields.windowStart != nil) THEN \(fields.windowStart ?? nil) ELSE window_start END,
                               window_end = CASE WHEN \(fields.windowEnd != nil) THEN \(fields.windowEnd ?? nil) ELSE window_end END,
                               notes = CASE WHEN \(fields.notes != nil) THEN \(fields.notes ?? nil) ELSE notes END
                         WHERE id = \(id) AND tenant_id = \(tenant.rawValue)
                        RETURNING *)
                    SELECT v.id, r.driver_id, dv.id, dv.group_name, dv.grade, v.status, pgtrack_visit_json(v)::text
                      FROM v JOIN routes r ON r.id = v.route_id JOIN drivers d ON d.id = r.driver_id
                      LEFT JOIN devices dv ON dv.id = d.device_id
                    """, logger: logger))
            }
        }
    }

    public enum VisitSelection: Sendable {
        case one(UUID), route(UUID), driver(UUID)
    }

    /// Visits in route order; for a driver, of their routes in progress or scheduled today.
    public func visits(tenant: TenantID, selecting selection: VisitSelection) async throws -> [FleetRecord] {
        var one: UUID?, route: UUID?, driver: UUID?
        switch selection {
        case .one(let id): one = id
        case .route(let id): route = id
        case .driver(let id): driver = id
        }
        return try await withTenant(tenant) { connection in
            try await visitRecords(connection.query("""
                SELECT v.id, r.driver_id, dv.id, dv.group_name, dv.grade, v.status, pgtrack_visit_json(v)::text
                  FROM visits v JOIN routes r ON r.id = v.route_id JOIN drivers d ON d.id = r.driver_id
                  LEFT JOIN devices dv ON dv.id = d.device_id
                 WHERE v.tenant_id = \(tenant.rawValue)
                   AND (\(one)::uuid IS NULL OR v.id = \(one))
                   AND (\(route)::uuid IS NULL OR v.route_id = \(route))
                   AND (\(driver)::uuid IS NULL
                        OR (r.driver_id = \(driver) AND (r.status = 'in_progress' OR r.scheduled_date = current_date)))
                 ORDER BY r.scheduled_date, r.id, v.sequence
                 LIMIT 5000
                """, logger: logger))
        }
    }

    public func setVisitStatus(_ id: UUID, to status: String, tenant: TenantID) async throws -> FleetStatusOutcome {
        try await withTenant(tenant) { connection in
            try await statusOutcome(connection.query("""
                SELECT o::text FROM pgtrack_visit_set_status(\(tenant.rawValue), \(id), \(status)) o
                """, logger: logger), key: "visit")
        }
    }

    /// Deletes a driver (with their routes and visits), a route (with its visits) or a visit.
    public func deleteFleetRecord(_ table: FleetTable, id: UUID, tenant: TenantID) async throws -> Bool {
        try await withTenant(tenant) { connection in
            let rows: PostgresRowSequence
            switch table {
            case .drivers: rows = try await connection.query("DELETE FROM drivers WHERE id = \(id) AND tenant_id = \(tenant.rawValue) RETURNING id", logger: logger)
            case .routes: rows = try await connection.query("DELETE FROM routes WHERE id = \(id) AND tenant_id = \(tenant.rawValue) RETURNING id", logger: logger)
            case .visits: rows = try await connection.query("DELETE FROM visits WHERE id = \(id) AND tenant_id = \(tenant.rawValue) RETURNING id", logger: logger)
            }
            var deleted = false
            for try await _ in rows { deleted = true }
            return deleted
        }
    }

    public enum FleetTable: Sendable { case drivers, routes, visits }

    // MARK: History and live drivers

    /// Stored fixes of a device or a route in (fix_time, id) order within `[from, to)`, after
    /// `cursor`, at most `limit`; each as position JSON with its enrichment.
    public func history(_ source: HistorySource, tenant: TenantID, after cursor: PointCursor?, from: Date?, to: Date?,
                        limit: Int) async throws -> [HistoryPoint] {
        var device: UUID?, route: UUID?
        switch source {
        case .device(let id): device = id
        case .route(let id): route = id
        }
        return try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT p.id, (extract(epoch FROM p.fix_time) * 1000000)::bigint,
                       (pgtrack_position_json(p.device_id, p.booking_id, p.fix_time, p.received_at, p.location, p.speed,
                            p.heading, p.altitude, p.accuracy, p.battery, p.attributes)
                        || jsonb_strip_nulls(jsonb_build_object('route_id', p.route_id, 'next_visit_id', p.next_visit_id,
                               'distance_to_next_m', round(p.distance_to_next_m::numeric, 1)::float8,
                               'eta_seconds', round(p.eta_seconds::numeric)::float8)))::text
                  FROM positions p
                 WHERE p.tenant_id = \(tenant.rawValue)
                   AND (\(device)::uuid IS NULL OR p.device_id = \(device))
                   AND (\(route)::uuid IS NULL OR p.route_id = \(route))
                   AND p.filter_reason IS NULL
                   AND (\(from)::timestamptz IS NULL OR p.fix_time >= \(from))
                   AND (\(to)::timestamptz IS NULL OR p.fix_time < \(to))
                   AND (\(cursor?.id)::bigint IS NULL
                        OR (p.fix_time, p.id) > (timestamptz 'epoch' + \(cursor?.fixTimeMicros)::bigint * interval '1 microsecond',
                                                 \(cursor?.id)::bigint))
                 ORDER BY p.fix_time, p.id
                 LIMIT \(limit)
                """, logger: logger)
            var points: [HistoryPoint] = []
            for try await (id, micros, json) in rows.decode((Int64, Int64, String).self) {
                points.append(HistoryPoint(json: json, cursor: PointCursor(fixTimeMicros: micros, id: id)))
            }
            return points
        }
    }

    /// Drivers with a fix in the last `minutes`, newest first: the driver with `route_id` and
    /// `position` (the location update as pushed, enrichment included), with its audience.
    public func activeDrivers(tenant: TenantID, minutes: Int) async throws -> [(audience: EventAudience, json: String)] {
        try await withTenant(tenant) { connection in
            let rows = try await connection.query("""
                SELECT device_id, group_name, grade, driver::text FROM pgtrack_active_drivers(\(tenant.rawValue), \(minutes)::integer)
                """, logger: logger)
            var drivers: [(audience: EventAudience, json: String)] = []
            for try await (device, group, grade, json) in rows.decode((UUID, String, Int, String).self) {
                drivers.append((EventAudience(device: device, group: group, grade: grade), json))
            }
            return drivers
        }
    }

    // MARK: Helpers

    private func fleetRecords(_ rows: PostgresRowSequence) async throws -> [FleetRecord] {
        var records: [FleetRecord] = []
        for try await (id, driver, device, group, grade, status, json) in rows.decode((UUID, UUID, UUID?, String?, Int?, String, String).self) {
            let audience = device.map { EventAudience(device: $0, group: group ?? "", grade: grade ?? 0) }
            records.append(FleetRecord(id: id, driver: driver, audience: audience, status: status, json: json))
        }
        return records
    }

    private func fleetRecord(_ rows: PostgresRowSequence) async throws -> FleetRecord? {
        try await fleetRecords(rows).first
    }

    private func visitRecords(_ rows: PostgresRowSequence) async throws -> [FleetRecord] { try await fleetRecords(rows) }
    private func visitRecord(_ rows: PostgresRowSequence) async throws -> FleetRecord? { try await fleetRecords(rows).first }

    private func statusOutcome(_ rows: PostgresRowSequence, key: String) async throws -> FleetStatusOutcome {
        for try await text in rows.decode(String.self) {
            let object = (try? JSONSerialization.jsonObject(with: Data(text.utf8))) as? [String: Any] ?? [:]
            var json: String?
            if let record = object[key], let data = try? JSONSerialization.data(withJSONObject: record, options: [.sortedKeys]) {
                json = String(decoding: data, as: UTF8.self)
            }
            return FleetStatusOutcome(outcome: object["outcome"] as? String ?? "not_found", status: object["status"] as? String,
                                      allowed: object["allowed"] as? String, other: object["other"] as? String, json: json)
        }
        throw APIError.unavailable("the status function returned nothing")
    }

    /// Database refusals of a fleet write as errors a person can act on.
    private func fleetWrite<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as PSQLError where error.sqlState == "23505" {
            let constraint = error.serverInfo?[.constraintName] ?? ""
            if constraint.contains("drivers_device") {
                throw APIError(status: 409, code: "conflict", message: "device_id: that device already drives for another driver.", field: "device_id")
            }
            if constraint.contains("visits_route_id_sequence") {
                throw APIError(status: 409, code: "conflict", message: "sequence: the route already has a visit with that sequence.", field: "sequence")
            }
            throw APIError.conflict("That conflicts with an existing record: \(error.serverMessage)")
        } catch let error as PSQLError where error.sqlState == "23503" {
            let constraint = error.serverInfo?[.constraintName] ?? ""
            if constraint.contains("device") {
                throw APIError.invalid("device_id: no such device in your tenant.", field: "device_id", index: nil)
            }
            if constraint.contains("driver") {
                throw APIError.invalid("driver_id: no such driver in your tenant.", field: "driver_id", index: nil)
            }
            if constraint.contains("route") {
                throw APIError.invalid("route_id: no such route in your tenant.", field: "route_id", index: nil)
            }
            throw APIError.invalid("A referenced record does not exist: \(error.serverMessage)", field: nil, index: nil)
        } catch let error as PSQLError where error.sqlState == "23514" || error.sqlState == "22007" || error.sqlState == "22008" {
            throw APIError.invalid("A value is out of range: \(error.serverMessage)", field: nil, index: nil)
        }
    }
}
