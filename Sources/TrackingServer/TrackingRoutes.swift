import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// Reading a trip: `GET /api/v1/tracking/{bookingId}` (details and metadata), `…/route`
/// (GeoJSON, GPX or CSV) and `…/points` (paged waypoints for playback).
struct TrackingRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let access: TripAccess

    static let maxSimplifyMetres = 10_000.0
    static let maxPageSize = 1_000

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/tracking/:id", use: trip)
        router.get("/api/v1/tracking/:id/route", use: route)
        router.get("/api/v1/tracking/:id/points", use: points)
    }

    @Sendable func trip(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        return jsonResponse(try await access.visibleTrip(try bookingParameter(context), for: principal).json)
    }

    /// `?format=geojson` (default; `?points=true`, `?simplify=<metres>`), `gpx` or `csv`.
    @Sendable func route(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        let trip = try await access.visibleTrip(try bookingParameter(context), for: principal)
        let query = request.uri.queryParameters
        switch query.get("format")?.lowercased() ?? "geojson" {
        case "geojson", "json":
            let includePoints = try flag(query.get("points"), name: "points")
            var simplify: Double?
            if let text = query.get("simplify") {
                guard let metres = Double(text), metres.isFinite, metres >= 0, metres <= Self.maxSimplifyMetres else {
                    throw APIError.invalid("simplify: must be a tolerance in metres, 0–\(Int(Self.maxSimplifyMetres)).", field: "simplify", index: nil)
                }
                simplify = metres
            }
            let geojson = try await repository.routeGeoJSON(of: trip, tenant: principal.tenant, includePoints: includePoints, simplifyMetres: simplify)
            return Response(status: .ok, headers: [.contentType: "application/geo+json; charset=utf-8"],
                            body: .init(byteBuffer: .init(string: geojson)))
        case "gpx":
            let points = try await repository.routePoints(of: trip, tenant: principal.tenant).map(\.0)
            return download(RouteFormats.gpx(booking: trip.booking, points: points), type: "application/gpx+xml", name: "\(trip.booking).gpx")
        case "csv":
            let points = try await repository.routePoints(of: trip, tenant: principal.tenant).map(\.0)
            return download(RouteFormats.csv(points: points), type: "text/csv; charset=utf-8; header=present", name: "\(trip.booking).csv")
        default:
            throw APIError.invalid("format: must be geojson, gpx or csv.", field: "format", index: nil)
        }
    }

    /// `?from=&to=` (ISO-8601, `to` exclusive), `?limit=` (1–1000, default 100), `?cursor=` from
    /// the previous page's `next_cursor`.
    @Sendable func points(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        let trip = try await access.visibleTrip(try bookingParameter(context), for: principal)
        let query = try PointPageQuery(request, maxPageSize: Self.maxPageSize)
        let page = try await repository.routePoints(of: trip, tenant: principal.tenant, after: query.cursor, from: query.from,
                                                    to: query.to, limit: query.limit + 1)
        let shown = page.prefix(query.limit)
        let next = page.count > query.limit ? shown.last.map { #""\#($0.1.text)""# } ?? "null" : "null"
        let items = shown.map { point, _ in Self.pointJSON(point) }.joined(separator: ",")
        return jsonResponse(#"{"booking_id":"\#(trip.booking)","points":[\#(items)],"next_cursor":\#(next)}"#)
    }

    static func pointJSON(_ point: RoutePoint) -> String {
        var json = #"{"timestamp":"\#(RouteFormats.isoTime(point.fixTime))","latitude":\#(point.latitude),"longitude":\#(point.longitude)"#
        for (name, value) in [("speed", point.speed), ("heading", point.heading), ("altitude", point.altitude), ("accuracy", point.accuracy)] {
            if let value { json += #","\#(name)":\#(value)"# }
        }
        return json + "}"
    }

    private func download(_ text: String, type: String, name: String) -> Response {
        Response(status: .ok, headers: [.contentType: type, .contentDisposition: #"attachment; filename="\#(name)""#],
                 body: .init(byteBuffer: .init(string: text)))
    }

    private func flag(_ text: String?, name: String) throws -> Bool {
        switch text?.lowercased() {
        case nil, "false", "0": return false
        case "true", "1", "": return true
        default: throw APIError.invalid("\(name): must be true or false.", field: name, index: nil)
        }
    }
}
