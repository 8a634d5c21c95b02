import Foundation
import HTTPTypes
import Hummingbird
import Logging
import ServiceLifecycle
import TrackingCore
import TrackingStore

/// `GET /api/v1/stream` (a tenant's devices) and `GET /api/v1/bookings/{id}/stream` (one booking),
/// as SSE, filtered by what the caller may see.
struct StreamRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let hub: FanOutHub
    let snapshots: SnapshotCoalescer
    /// See `SlowConsumerRule`.
    var slowConsumerGrace: Duration = SlowConsumerRule.window

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/stream") { request, context in try await response(.tenant, request: request, context: context) }
        router.get("/api/v1/bookings/:id/stream") { request, context in
            try await response(.booking(context.parameters.get("id") ?? ""), request: request, context: context)
        }
        router.get("/api/v1/admin/stream") { request, context in try await response(.admin, request: request, context: context) }
    }

    /// A stream whose subscription is live and whose start is decided; nothing is written yet.
    struct Opened: Sendable {
        let session: StreamSession
        let lease: SubscriptionLease
        let liveSince: ContinuousClock.Instant
        let viewer: StreamViewer
    }

    static let responseHeaders: HTTPFields = [
        .contentType: "text/event-stream",
        .cacheControl: "no-cache",
        // The server closes the connection when a stream ends; say so, so clients do not
        // return the connection to a keep-alive pool.
        .connection: "close",
        HTTPField.Name("X-Accel-Buffering")!: "no",
    ]

    /// A stream requested on a connection that already served other requests (keep-alive):
    /// Hummingbird's task for the connection runs it. A connection whose first request is a
    /// stream is served by `EventLoopStreams` instead, which holds no task while the stream is idle.
    private func response(_ endpoint: StreamEndpoint, request: Request, context: AppRequestContext) async throws -> Response {
        let opened = try await open(endpoint, request: request, logger: context.logger)
        return Response(status: .ok, headers: Self.responseHeaders, body: ResponseBody { writer in
            guard let subscription = opened.lease.take() else { return }
            let ending = StreamSession.Ending()
            try await withGracefulShutdownHandler {
                try await request.body.consumeWithInboundCloseHandler { _ in
                    let progress = try await opened.session.open(subscription: subscription, liveSince: opened.liveSince,
                                                                 viewer: opened.viewer, writer: &writer)
                    let channel = context.channel
                    try await opened.session.live(progress, ending: ending, writer: &writer, grace: slowConsumerGrace) {
                        channel.close(promise: nil)
                    }
                } onInboundClosed: {
                    ending.end()
                }
            } onGracefulShutdown: {
                ending.end()
            }
        })
    }

    /// Authenticates the caller, checks what they may watch and subscribes (`consumer`: who takes
    /// the mailbox's signals, when no task reads them). Throws an `APIError` for a request that
    /// cannot be streamed.
    func open(_ endpoint: StreamEndpoint, request: Request, logger: Logger,
              consumer: (any MailboxConsumer)? = nil) async throws -> Opened {
        let principal = try await authenticator.authenticate(request, allowQueryCredentials: true)
        let topic: BusTopic
        switch endpoint {
        case .tenant:
            topic = .tenant(principal.tenant)
        case .admin:
            // The tenant's admin-only events (`cdc_lag` every 5 s): admins only.
            guard case .user(let user) = principal, user.role == .admin else {
                throw APIError.forbidden("The admin stream is for admins.")
            }
            topic = .admin(principal.tenant)
        case .booking(let raw):
            guard let booking = BookingID(raw) else {
                throw APIError.invalid("booking id must be \(BookingID.rule)", field: "id", index: nil)
            }
            topic = .booking(principal.tenant, booking)
        }
        // Subscribe (LISTEN is live) before reading anything, so nothing falls between the read
        // and live: not the snapshot or log, and not the user's scope, whose changes ring the
        // user's own topic.
        var topics = [topic]
        if case .user(let user) = principal { topics.append(.user(user.tenant, user.id)) }
        let subscription = try await hub.subscribe(topics: topics, consumer: consumer)
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
                                    logger: logger)
        return Opened(session: session, lease: SubscriptionLease(subscription), liveSince: liveSince, viewer: viewer)
    }
}

/// The SSE endpoints, recognised from a request path.
enum StreamEndpoint: Equatable, Sendable {
    case tenant
    case admin
    case booking(String)

    /// `/api/v1/stream`, `/api/v1/admin/stream` or `/api/v1/bookings/{id}/stream`; nil for
    /// anything else (which the router answers).
    init?(path: Substring) {
        switch path {
        case "/api/v1/stream": self = .tenant
        case "/api/v1/admin/stream": self = .admin
        default:
            let prefix = "/api/v1/bookings/", suffix = "/stream"
            guard path.hasPrefix(prefix), path.hasSuffix(suffix), path.count > prefix.count + suffix.count else { return nil }
            let id = path.dropFirst(prefix.count).dropLast(suffix.count)
            guard !id.contains("/") else { return nil }
            self = .booking(String(id))
        }
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
