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
/// A refused upgrade request (bad credentials, a booking the caller may not see, an unknown
/// WebSocket path) is still upgraded, then sent one `{"type":"error","status",…}` message and
/// closed with code 4000 + the HTTP status (4401, 4403, 4404). hummingbird-websocket answers a
/// declined upgrade with an empty 400, and a browser cannot read an HTTP status of a failed
/// handshake anyway; a close code it can. A plain GET reaches the HTTP router, where the same
/// check answers with the JSON error (401, 404…), and one that passes it gets 426.
struct WebSocketRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let access: TripAccess
    let hub: FanOutHub
    let snapshots: SnapshotCoalescer
    let settings: WebSocketSession.Settings

    func register(upgrades router: Router<WebSocketRequestContextWithAdmission>) {
        router.ws("/ws") { request, context in
            await decide(context) { try await admit(request, booking: nil) }
        } onUpgrade: { inbound, outbound, context in
            try await open(context, inbound: inbound, outbound: outbound)
        }
        router.ws("/ws/tracking/:id") { request, context in
            await decide(context) {
                try await admit(request, booking: try bookingParameter(context.parameters.get("id")))
            }
        } onUpgrade: { inbound, outbound, context in
            try await open(context, inbound: inbound, outbound: outbound)
        }
        // Any other path (both patterns: the router does not fall back from `/ws/…` to `/**`).
        for unknown in ["/**", "/ws/**"] {
            router.ws(RouterPath(unknown)) { request, context in
                await decide(context) {
                    throw APIError.notFound("No WebSocket endpoint at \(request.uri.path.prefix(200)): connect to /ws or /ws/tracking/{bookingId}.")
                }
            } onUpgrade: { inbound, outbound, context in
                try await open(context, inbound: inbound, outbound: outbound)
            }
        }
    }

    /// Runs the upgrade check and keeps its outcome for the socket; the upgrade always goes on.
    private func decide(_ context: WebSocketRequestContextWithAdmission,
                        _ check: () async throws -> WebSocketAdmission) async -> RouterShouldUpgrade {
        do {
            context.admission.store(.success(try await check()))
        } catch let error as APIError {
            context.admission.store(.failure(error))
        } catch {
            context.logger.error("websocket admission failed: \(describeDatabaseError(error))")
            context.admission.store(.failure(APIError(status: 500, code: "internal",
                                                      message: "Internal error; the server log has details.")))
        }
        return .upgrade([:])
    }

    private func open(_ context: WebSocketRouterContext<WebSocketRequestContextWithAdmission>,
                      inbound: WebSocketInboundStream, outbound: WebSocketOutboundWriter) async throws {
        switch context.requestContext.admission.take() {
        case .success(let admission):
            try await WebSocketSession(admission: admission, hub: hub, repository: repository, authenticator: authenticator,
                                       snapshots: snapshots, settings: settings, logger: context.logger)
                .run(inbound: inbound, outbound: outbound, channel: context.requestContext.channel)
        case .failure(let error):
            try await Self.refuse(error, outbound: outbound)
        case nil:
            try await Self.refuse(.unauthorized("The WebSocket was not admitted."), outbound: outbound)
        }
    }

    /// How long a socket waits after the upgrade before the server speaks first (a refusal, or
    /// the opening of /ws/tracking): frames in the same TCP read as the 101 are dropped by some
    /// client upgraders (swift-nio's, under hummingbird-websocket's client, among them), which
    /// then wait forever for them. 50 ms was not enough on a loaded 2-core machine (tests failed
    /// 2 full runs in 5, for refusals and for a tracking socket's first message). On /ws the
    /// client speaks first (join), so it has read the 101 by then and nothing waits.
    static let firstFrameDelay = Duration.milliseconds(300)

    /// One error message, then a close with code 4000 + status and the error code as reason.
    static func refuse(_ error: APIError, outbound: WebSocketOutboundWriter) async throws {
        try await Task.sleep(for: firstFrameDelay)
        try await outbound.write(.text(WebSocketSession.errorMessage(error.message, code: error.code, status: error.status)))
        try await outbound.close(.unknown(UInt16(4000 + error.status)), reason: error.code)
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
