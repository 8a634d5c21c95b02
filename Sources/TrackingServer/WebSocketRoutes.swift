import Foundation
import Hummingbird
import HummingbirdWebSocket
import Logging
import TrackingCore
import TrackingStore

/// `GET /ws` (one socket, many rooms) and `GET /ws/tracking/{bookingId}` (one trip's room,
/// closed after the trip's final status). Credentials as for SSE: `Authorization: Bearer`,
/// `X-API-Key`, `?access_token=` or `?api_key=`.
///
/// A refused upgrade is answered by hummingbird-websocket itself (an empty 400; the JSON error
/// is a known gap). A plain GET reaches the HTTP router, where the same check
/// answers with the JSON error (401, 404…); a plain GET that passes it gets 426.
struct WebSocketRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let access: TripAccess
    let hub: FanOutHub
    let snapshots: SnapshotCoalescer
    let settings: WebSocketSession.Settings

    func register(upgrades router: Router<WebSocketRequestContextWithAdmission>) {
        router.ws("/ws") { request, context in
            context.admission.store(try await admit(request, booking: nil))
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            try await session(context).run(inbound: inbound, outbound: outbound)
        }
        router.ws("/ws/tracking/:id") { request, context in
            let booking = try bookingParameter(context.parameters.get("id"))
            context.admission.store(try await admit(request, booking: booking))
            return .upgrade([:])
        } onUpgrade: { inbound, outbound, context in
            try await session(context).run(inbound: inbound, outbound: outbound)
        }
    }

    /// The same paths on the HTTP router: refused upgrades and plain GETs end here.
    func register(fallbacks router: Router<AppRequestContext>) {
        router.get("/ws") { request, _ -> Response in
            _ = try await admit(request, booking: nil)
            throw Self.upgradeRequired
        }
        router.get("/ws/tracking/:id") { request, context -> Response in
            _ = try await admit(request, booking: try bookingParameter(context.parameters.get("id")))
            throw Self.upgradeRequired
        }
    }

    static let upgradeRequired = APIError(status: 426, code: "upgrade_required",
                                          message: "This is a WebSocket endpoint: connect with a WebSocket client (Upgrade: websocket).")

    private func admit(_ request: Request, booking: BookingID?) async throws -> WebSocketAdmission {
        let principal = try await authenticator.authenticate(request, allowQueryCredentials: true)
        let trip = try await booking.asyncMap { try await access.visibleTrip($0, for: principal) }
        return WebSocketAdmission(principal: principal, trip: trip, since: request.uri.queryParameters.get("since"))
    }

    private func session(_ context: WebSocketRouterContext<WebSocketRequestContextWithAdmission>) throws -> WebSocketSession {
        guard let admission = context.requestContext.admission.take() else {
            throw APIError.unauthorized("The WebSocket was not admitted.")
        }
        return WebSocketSession(admission: admission, hub: hub, repository: repository, authenticator: authenticator,
                                snapshots: snapshots, settings: settings, logger: context.logger)
    }
}

extension Optional {
    func asyncMap<T>(_ transform: (Wrapped) async throws -> T) async rethrows -> T? {
        guard let value = self else { return nil }
        return try await transform(value)
    }
}

/// A booking id from a path parameter, or 404 for one that cannot exist.
func bookingParameter(_ raw: String?) throws -> BookingID {
    let raw = raw ?? ""
    guard let booking = BookingID(raw) else {
        throw APIError.notFound("No booking \(raw.prefix(64)): booking ids are \(BookingID.rule).")
    }
    return booking
}
