import Foundation
import HTTPTypes
import Hummingbird
import Logging
import TrackingCore
import TrackingStore

/// `GET /api/v1/stream` (a tenant's devices) and `GET /api/v1/bookings/{id}/stream` (one booking),
/// as SSE, filtered by what the caller may see.
struct StreamRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let hub: FanOutHub
    let snapshots: SnapshotCoalescer

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/stream", use: tenantStream)
        router.get("/api/v1/bookings/:id/stream", use: bookingStream)
        router.get("/api/v1/admin/stream", use: adminStream)
    }

    /// The tenant's admin-only events (`cdc_lag` every 5 s): admins only.
    @Sendable func adminStream(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request, allowQueryCredentials: true)
        guard case .user(let user) = principal, user.role == .admin else {
            throw APIError.forbidden("The admin stream is for admins.")
        }
        return try await stream(.admin(principal.tenant), for: principal, request: request, context: context)
    }

    @Sendable func tenantStream(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request, allowQueryCredentials: true)
        return try await stream(.tenant(principal.tenant), for: principal, request: request, context: context)
    }

    @Sendable func bookingStream(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request, allowQueryCredentials: true)
        let raw = context.parameters.get("id") ?? ""
        guard let booking = BookingID(raw) else {
            throw APIError.invalid("booking id must be \(BookingID.rule)", field: "id", index: nil)
        }
        return try await stream(.booking(principal.tenant, booking), for: principal, request: request, context: context)
    }

    private func stream(_ topic: BusTopic, for principal: Principal, request: Request, context: AppRequestContext) async throws -> Response {
        // Subscribe (LISTEN is live) before reading anything, so nothing falls between the read
        // and live: not the snapshot or log, and not the user's scope, whose changes ring the
        // user's own topic.
        var topics = [topic]
        if case .user(let user) = principal { topics.append(.user(user.tenant, user.id)) }
        let subscription = try await hub.subscribe(topics: topics)
        let liveSince = ContinuousClock.now
        let start: StreamStart
        let viewer: StreamViewer
        do {
            viewer = try await authenticator.currentViewer(principal)
            guard let bounds = try await repository.logBounds(tenant: topic.tenant) else {
                throw APIError.notFound("\(topic) does not exist")
            }
            let requested = request.headers[.lastEventID] ?? request.uri.queryParameters.get("since")
            start = StreamStart.decide(requested: requested, bounds: bounds)
        } catch {
            await subscription.cancel()
            throw error
        }
        let session = StreamSession(topic: topic, start: start, hub: hub, repository: repository, snapshots: snapshots,
                                    logger: context.logger)
        let lease = SubscriptionLease(subscription)
        return Response(
            status: .ok,
            headers: [
                .contentType: "text/event-stream",
                .cacheControl: "no-cache",
                // The server closes the connection when a stream ends; say so, so clients do not
                // return the connection to a keep-alive pool.
                .connection: "close",
                HTTPField.Name("X-Accel-Buffering")!: "no",
            ],
            body: ResponseBody { writer in
                guard let subscription = lease.take() else { return }
                try await session.run(subscription: subscription, liveSince: liveSince, viewer: viewer, request: request, writer: &writer)
            })
    }
}

extension Authenticator {
    /// What the caller may see as stored now. Read after the user's topic is live, so any later
    /// change rings the session; the copy authentication read may already be stale.
    func currentViewer(_ principal: Principal) async throws -> StreamViewer {
        guard case .user(let user) = principal else {
            return StreamViewer(filter: visibility(of: principal), user: nil)
        }
        guard let current = try await repository.user(user.id, tenant: user.tenant) else {
            throw APIError.unauthorized("This user no longer exists.")
        }
        return StreamViewer(filter: visibility(of: .user(current)), user: user.id)
    }
}

extension HTTPField.Name {
    static let lastEventID = Self("Last-Event-ID")!
}
