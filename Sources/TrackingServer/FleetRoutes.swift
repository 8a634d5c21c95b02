import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// Fleet operations: drivers, routes and planned visits (`/api/v1/drivers`, `/api/v1/routes`,
/// `/api/v1/visits`), visit and route status changes, and playback history.
///
/// Admins and dispatchers write; every user reads, within their scope (a record whose driver
/// has a device is seen by those who may see that device); a driver-role user reads only the
/// driver linked to their own device, its routes and visits, and may move their visits' status.
/// Another tenant's record, or one the caller may not see, is a 404.
struct FleetRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator

    static let writers: Set<Role> = [.admin, .dispatcher]
    static let vehicleTypes = ["car", "van", "truck", "motorcycle", "bicycle", "other"]
    static let driverStatuses = ["active", "inactive", "on_leave"]
    static let visitTypes = ["delivery", "pickup", "service", "inspection", "other"]
    static let visitStatuses = ["pending", "arrived", "in_progress", "completed", "departed"]
    static let routeStatuses = ["planned", "in_progress", "completed"]

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/drivers", use: createDriver)
        router.get("/api/v1/drivers", use: listDrivers)
        router.get("/api/v1/drivers/:id", use: getDriver)
        router.patch("/api/v1/drivers/:id", use: updateDriver)
        router.delete("/api/v1/drivers/:id") { request, context in try await delete(.drivers, "driver", request, context) }
        router.get("/api/v1/drivers/:id/history") { request, context in try await history(of: .drivers, request, context) }

        router.post("/api/v1/routes", use: createRoute)
        router.get("/api/v1/routes", use: listRoutes)
        router.get("/api/v1/routes/:id", use: getRoute)
        router.patch("/api/v1/routes/:id", use: updateRoute)
        router.delete("/api/v1/routes/:id") { request, context in try await delete(.routes, "route", request, context) }
        router.patch("/api/v1/routes/:id/status", use: setRouteStatus)
        router.get("/api/v1/routes/:id/history") { request, context in try await history(of: .routes, request, context) }
        router.get("/api/v1/routes/driver/:id/active") { request, context in try await driverRoutes(active: true, request, context) }
        router.get("/api/v1/routes/driver/:id/today") { request, context in try await driverRoutes(active: false, request, context) }

        router.post("/api/v1/visits", use: createVisit)
        router.get("/api/v1/visits/:id", use: getVisit)
        router.patch("/api/v1/visits/:id", use: updateVisit)
        router.delete("/api/v1/visits/:id") { request, context in try await delete(.visits, "visit", request, context) }
        router.patch("/api/v1/visits/:id/status", use: setVisitStatus)
        router.get("/api/v1/visits/route/:id", use: routeVisits)
        router.get("/api/v1/visits/driver/:id", use: driverVisits)
    }

    // MARK: Access

    /// The calling user (any role); devices are refused.
    private func reader(_ request: Request) async throws -> UserRecord {
        try await authenticator.authenticate(request).requireUser(Set(Role.allCases), to: "read fleet records")
    }

    private func writer(_ request: Request, to action: String) async throws -> UserRecord {
        try await authenticator.authenticate(request).requireUser(Self.writers, to: action)
    }

    /// Whether `user` may see a record whose driver's device has `audience`.
    static func canSee(_ audience: EventAudience?, _ user: UserRecord) -> Bool {
        if user.role == .driver { return audience != nil && audience?.device == user.deviceID }
        guard let audience else { return true }
        return StreamFilter.forUser(role: user.role, scope: user.scope, device: user.deviceID).allows(audience)
    }

    private func visible(_ record: FleetRecord?, _ user: UserRecord, _ resource: String, _ id: UUID) throws -> FleetRecord {
        guard let record, Self.canSee(record.audience, user) else {
            throw APIError.notFound("No \(resource) \(id.uuidString.lowercased()).")
        }
        return record
    }

    private func list(_ name: String, _ records: [FleetRecord], _ user: UserRecord) -> Response {
        jsonResponse(#"{"\#(name)":[\#(records.filter { Self.canSee($0.audience, user) }.map(\.json).joined(separator: ","))]}"#)
    }

    // MARK: Drivers

    @Sendable func createDriver(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "create drivers")
        let fields = try await request.decodeJSON(DriverBody.self).validated(creating: true)
        return jsonResponse(try await repository.createDriver(fields, tenant: user.tenant).json, status: .created)
    }

    @Sendable func listDrivers(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        return list("drivers", try await repository.drivers(tenant: user.tenant), user)
    }

    @Sendable func getDriver(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        let id = try request.uuidParameter("id", context: context, resource: "driver")
        return jsonResponse(try visible(try await repository.driver(id, tenant: user.tenant), user, "driver", id).json)
    }

    @Sendable func updateDriver(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "change drivers")
        let id = try request.uuidParameter("id", context: context, resource: "driver")
        let fields = try await request.decodeJSON(DriverBody.self).validated(creating: false)
        guard let record = try await repository.updateDriver(id, fields, tenant: user.tenant) else {
            throw APIError.notFound("No driver \(id.uuidString.lowercased()).")
        }
        return jsonResponse(record.json)
    }

    // MARK: Routes

    @Sendable func createRoute(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "create routes")
        let fields = try await request.decodeJSON(RouteBody.self).validated(creating: true)
        return jsonResponse(try await repository.createRoute(fields, tenant: user.tenant).json, status: .created)
    }

    /// `?driver_id=` narrows to one driver's routes.
    @Sendable func listRoutes(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        var selection = TrackingRepository.RouteSelection.all
        if let text = request.uri.queryParameters.get("driver_id") {
            guard let driver = UUID(uuidString: text) else {
                throw APIError.invalid("driver_id: must be a driver id (a UUID).", field: "driver_id", index: nil)
            }
            selection = .driver(driver)
        }
        return list("routes", try await repository.routes(tenant: user.tenant, selecting: selection), user)
    }

    @Sendable func getRoute(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        let id = try request.uuidParameter("id", context: context, resource: "route")
        return jsonResponse(try visible(try await repository.route(id, tenant: user.tenant), user, "route", id).json)
    }

    @Sendable func updateRoute(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "change routes")
        let id = try request.uuidParameter("id", context: context, resource: "route")
        let fields = try await request.decodeJSON(RouteBody.self).validated(creating: false)
        guard let record = try await repository.updateRoute(id, fields, tenant: user.tenant) else {
            throw APIError.notFound("No route \(id.uuidString.lowercased()).")
        }
        return jsonResponse(record.json)
    }

    /// `{"status": "in_progress" | "completed"}`: planned → in_progress → completed.
    @Sendable func setRouteStatus(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "start or complete routes")
        let id = try request.uuidParameter("id", context: context, resource: "route")
        let status = try await request.decodeJSON(StatusBody.self).check(Self.routeStatuses)
        let outcome = try await repository.setRouteStatus(id, to: status, tenant: user.tenant)
        return try Self.answer(outcome, resource: "route", id: id, requested: status)
    }

    /// The driver's route in progress (404 when none), or their routes scheduled today.
    private func driverRoutes(active: Bool, _ request: Request, _ context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        let driverID = try request.uuidParameter("id", context: context, resource: "driver")
        _ = try visible(try await repository.driver(driverID, tenant: user.tenant), user, "driver", driverID)
        let routes = try await repository.routes(tenant: user.tenant, selecting: active ? .active(driverID) : .today(driverID))
        guard active else { return list("routes", routes, user) }
        guard let route = routes.first else {
            throw APIError.notFound("Driver \(driverID.uuidString.lowercased()) has no route in progress.")
        }
        return jsonResponse(route.json)
    }

    // MARK: Visits

    @Sendable func createVisit(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "plan visits")
        let fields = try await request.decodeJSON(VisitBody.self).validated(creating: true)
        return jsonResponse(try await repository.createVisit(fields, tenant: user.tenant).json, status: .created)
    }

    @Sendable func getVisit(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        let id = try request.uuidParameter("id", context: context, resource: "visit")
        let record = try await repository.visits(tenant: user.tenant, selecting: .one(id)).first
        return jsonResponse(try visible(record, user, "visit", id).json)
    }

    @Sendable func updateVisit(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "change visits")
        let id = try request.uuidParameter("id", context: context, resource: "visit")
        let fields = try await request.decodeJSON(VisitBody.self).validated(creating: false)
        guard let record = try await repository.updateVisit(id, fields, tenant: user.tenant) else {
            throw APIError.notFound("No visit \(id.uuidString.lowercased()).")
        }
        return jsonResponse(record.json)
    }

    /// `{"status": …}`: one step along pending → arrived → in_progress → completed → departed;
    /// anything else is a 409 naming the current status. Drivers may move their own visits.
    @Sendable func setVisitStatus(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await authenticator.authenticate(request).requireUser([.admin, .dispatcher, .driver], to: "change a visit's status")
        let id = try request.uuidParameter("id", context: context, resource: "visit")
        let status = try await request.decodeJSON(StatusBody.self).check(Self.visitStatuses)
        if user.role == .driver {
            _ = try visible(try await repository.visits(tenant: user.tenant, selecting: .one(id)).first, user, "visit", id)
        }
        let outcome = try await repository.setVisitStatus(id, to: status, tenant: user.tenant)
        return try Self.answer(outcome, resource: "visit", id: id, requested: status)
    }

    @Sendable func routeVisits(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        let routeID = try request.uuidParameter("id", context: context, resource: "route")
        _ = try visible(try await repository.route(routeID, tenant: user.tenant), user, "route", routeID)
        return list("visits", try await repository.visits(tenant: user.tenant, selecting: .route(routeID)), user)
    }

    /// The visits of the driver's route in progress and of their routes scheduled today.
    @Sendable func driverVisits(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        let driverID = try request.uuidParameter("id", context: context, resource: "driver")
        _ = try visible(try await repository.driver(driverID, tenant: user.tenant), user, "driver", driverID)
        return list("visits", try await repository.visits(tenant: user.tenant, selecting: .driver(driverID)), user)
    }

    private func delete(_ table: TrackingRepository.FleetTable, _ resource: String, _ request: Request,
                        _ context: AppRequestContext) async throws -> Response {
        let user = try await writer(request, to: "delete \(resource)s")
        let id = try request.uuidParameter("id", context: context, resource: resource)
        guard try await repository.deleteFleetRecord(table, id: id, tenant: user.tenant) else {
            throw APIError.notFound("No \(resource) \(id.uuidString.lowercased()).")
        }
        return Response(status: .noContent)
    }

    // MARK: History

    /// `?from=&to=` (ISO-8601, `to` exclusive), `?limit=` (1–1000, default 100), `?cursor=`.
    private func history(of table: TrackingRepository.FleetTable, _ request: Request, _ context: AppRequestContext) async throws -> Response {
        let user = try await reader(request)
        let resource = table == .drivers ? "driver" : "route"
        let id = try request.uuidParameter("id", context: context, resource: resource)
        let record = try visible(table == .drivers ? try await repository.driver(id, tenant: user.tenant)
                                                   : try await repository.route(id, tenant: user.tenant), user, resource, id)
        let page = try PointPageQuery(request, maxPageSize: TrackingRoutes.maxPageSize)
        var points: [HistoryPoint] = []
        let source: HistorySource? = table == .drivers ? record.audience.map { .device($0.device) } : .route(id)
        if let source {
            points = try await repository.history(source, tenant: user.tenant, after: page.cursor, from: page.from, to: page.to,
                                                  limit: page.limit + 1)
        }
        let shown = points.prefix(page.limit)
        let next = points.count > page.limit ? shown.last.map { #""\#($0.cursor.text)""# } ?? "null" : "null"
        return jsonResponse(#"{"\#(resource)_id":"\#(id.uuidString.lowercased())","points":[\#(shown.map(\.json).joined(separator: ","))],"next_cursor":\#(next)}"#)
    }


    /// A status change's outcome as a response: 200, 404, or 409 naming the current status.
    static func answer(_ outcome: FleetStatusOutcome, resource: String, id: UUID, requested: String) throws -> Response {
        switch outcome.outcome {
        case "changed", "unchanged":
            return jsonResponse(outcome.json ?? "{}")
        case "conflict":
            let current = outcome.status ?? "unknown"
            let next = outcome.allowed.map { "it can only move to \($0)" } ?? "it cannot change any more"
            throw APIError.conflict("The \(resource) is \(current); \(next), not to \(requested).", currentStatus: current)
        case "driver_busy":
            throw APIError.conflict("The driver already has route \(outcome.other ?? "?") in progress; complete it first.",
                                    currentStatus: outcome.status)
        default:
            throw APIError.notFound("No \(resource) \(id.uuidString.lowercased()).")
        }
    }
}

// MARK: Bodies

extension KeyedDecodingContainer {
    /// Absent: nil; JSON null: .some(nil); a value: .some(value).
    func nullable<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T?? {
        guard contains(key) else { return nil }
        if try decodeNil(forKey: key) { return .some(nil) }
        return .some(try decode(T.self, forKey: key))
    }
}

private func require(_ value: String?, _ field: String, length: ClosedRange<Int>) throws -> String? {
    guard let value else { return nil }
    let trimmed = value.trimmingCharacters(in: .whitespacesAndNewlines)
    guard length.contains(trimmed.count) else {
        throw APIError.invalid("\(field): must be \(length.lowerBound)–\(length.upperBound) characters.", field: field, index: nil)
    }
    return trimmed
}

private func oneOf(_ value: String?, _ field: String, _ allowed: [String]) throws -> String? {
    guard let value else { return nil }
    guard allowed.contains(value) else {
        throw APIError.invalid("\(field): must be one of \(allowed.joined(separator: ", ")).", field: field, index: nil)
    }
    return value
}

private func missing(_ field: String) -> APIError {
    APIError.invalid("\(field): is required.", field: field, index: nil)
}

struct DriverBody: Decodable {
    var fields = DriverFields()
    enum CodingKeys: String, CodingKey { case name, deviceID = "device_id", vehiclePlate = "vehicle_plate", vehicleType = "vehicle_type", status }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        fields.name = try container.decodeIfPresent(String.self, forKey: .name)
        fields.device = try container.nullable(UUID.self, forKey: .deviceID)
        fields.vehiclePlate = try container.nullable(String.self, forKey: .vehiclePlate)
        fields.vehicleType = try container.nullable(String.self, forKey: .vehicleType)
        fields.status = try container.decodeIfPresent(String.self, forKey: .status)
    }

    func validated(creating: Bool) throws -> DriverFields {
        var fields = fields
        if creating, fields.name == nil { throw missing("name") }
        fields.name = try require(fields.name, "name", length: 1...200)
        if case .some(.some(let plate)) = fields.vehiclePlate { fields.vehiclePlate = .some(try require(plate, "vehicle_plate", length: 1...20)) }
        if case .some(.some(let type)) = fields.vehicleType { _ = try oneOf(type, "vehicle_type", FleetRoutes.vehicleTypes) }
        fields.status = try oneOf(fields.status, "status", FleetRoutes.driverStatuses)
        return fields
    }
}

struct RouteBody: Decodable {
    var fields = RouteFields()
    enum CodingKeys: String, CodingKey { case driverID = "driver_id", name, scheduledDate = "scheduled_date", status }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        fields.driver = try container.decodeIfPresent(UUID.self, forKey: .driverID)
        fields.name = try container.nullable(String.self, forKey: .name)
        fields.scheduledDate = try container.decodeIfPresent(String.self, forKey: .scheduledDate)
        if container.contains(.status) {
            throw APIError.invalid("status: change it with PATCH /api/v1/routes/{id}/status.", field: "status", index: nil)
        }
    }

    func validated(creating: Bool) throws -> RouteFields {
        var fields = fields
        if creating, fields.driver == nil { throw missing("driver_id") }
        if creating, fields.scheduledDate == nil { throw missing("scheduled_date") }
        if case .some(.some(let name)) = fields.name { fields.name = .some(try require(name, "name", length: 1...200)) }
        if let date = fields.scheduledDate, !Self.isDate(date) {
            throw APIError.invalid("scheduled_date: must be a date such as 2026-11-23.", field: "scheduled_date", index: nil)
        }
        return fields
    }

    static func isDate(_ text: String) -> Bool {
        let parts = text.split(separator: "-", omittingEmptySubsequences: false)
        guard text.count == 10, parts.count == 3, parts[0].count == 4, parts[1].count == 2, parts[2].count == 2,
              let year = Int(parts[0]), let month = Int(parts[1]), let day = Int(parts[2]), (1900...9999).contains(year)
        else { return false }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        return DateComponents(calendar: calendar, year: year, month: month, day: day).isValidDate
    }
}

struct VisitBody: Decodable {
    var fields = VisitFields()
    var windowStartText: String??
    var windowEndText: String??
    enum CodingKeys: String, CodingKey {
        case routeID = "route_id", customerID = "customer_id", sequence, visitType = "visit_type"
        case windowStart = "window_start", windowEnd = "window_end", notes, status
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        fields.route = try container.decodeIfPresent(UUID.self, forKey: .routeID)
        fields.customer = try container.decodeIfPresent(String.self, forKey: .customerID)
        fields.sequence = try container.decodeIfPresent(Int.self, forKey: .sequence)
        fields.visitType = try container.decodeIfPresent(String.self, forKey: .visitType)
        windowStartText = try container.nullable(String.self, forKey: .windowStart)
        windowEndText = try container.nullable(String.self, forKey: .windowEnd)
        fields.notes = try container.nullable(String.self, forKey: .notes)
        if container.contains(.status) {
            throw APIError.invalid("status: change it with PATCH /api/v1/visits/{id}/status.", field: "status", index: nil)
        }
    }

    func validated(creating: Bool) throws -> VisitFields {
        var fields = fields
        if creating {
            if fields.route == nil { throw missing("route_id") }
            if fields.customer == nil { throw missing("customer_id") }
            if fields.sequence == nil { throw missing("sequence") }
        } else if fields.route != nil || fields.customer != nil {
            throw APIError.invalid("route_id and customer_id cannot change; plan a new visit instead.", field: fields.route != nil ? "route_id" : "customer_id", index: nil)
        }
        fields.customer = try require(fields.customer, "customer_id", length: 1...200)
        if let sequence = fields.sequence, !(1...10_000).contains(sequence) {
            throw APIError.invalid("sequence: must be 1–10000.", field: "sequence", index: nil)
        }
        fields.visitType = try oneOf(fields.visitType, "visit_type", FleetRoutes.visitTypes)
        fields.windowStart = try windowStartText.map { try $0.map { try Self.time($0, "window_start") } }
        fields.windowEnd = try windowEndText.map { try $0.map { try Self.time($0, "window_end") } }
        if case .some(.some(let start)) = fields.windowStart, case .some(.some(let end)) = fields.windowEnd, end < start {
            throw APIError.invalid("window_end: must not be before window_start.", field: "window_end", index: nil)
        }
        if case .some(.some(let notes)) = fields.notes, notes.count > 2_000 {
            throw APIError.invalid("notes: at most 2000 characters.", field: "notes", index: nil)
        }
        return fields
    }

    static func time(_ text: String, _ field: String) throws -> Date {
        guard let date = Timestamp.parse(text) else {
            throw APIError.invalid("\(field): must be an ISO-8601 time such as 2026-11-23T08:00:00Z.", field: field, index: nil)
        }
        return date
    }
}

struct StatusBody: Decodable {
    let status: String

    func check(_ allowed: [String]) throws -> String {
        guard allowed.contains(status) else {
            throw APIError.invalid("status: must be one of \(allowed.joined(separator: ", ")).", field: "status", index: nil)
        }
        return status
    }
}
