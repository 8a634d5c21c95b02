import HTTPTypes
import Hummingbird
import Logging
import TrackingCore
import TrackingStore

/// `GET /api/v1/stream` (a tenant's devices) and `GET /api/v1/bookings/{id}/stream` (one booking), as SSE.
struct StreamRoutes {
    let repository: TrackingRepository
    let authenticator: DeviceAuthenticator
    let hub: FanOutHub

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/stream", use: tenantStream)
        router.get("/api/v1/bookings/:id/stream", use: bookingStream)
    }

    @Sendable func tenantStream(request: Request, context: AppRequestContext) async throws -> Response {
        let device = try await authenticator.authenticate(request)
        return try await stream(.tenant(device.tenant), request: request, context: context)
    }

    @Sendable func bookingStream(request: Request, context: AppRequestContext) async throws -> Response {
        let device = try await authenticator.authenticate(request)
        let raw = context.parameters.get("id") ?? ""
        guard let booking = BookingID(raw) else {
            throw APIError.invalid("booking id must be \(BookingID.rule)", field: "id", index: nil)
        }
        return try await stream(.booking(device.tenant, booking), request: request, context: context)
    }

    private func stream(_ topic: BusTopic, request: Request, context: AppRequestContext) async throws -> Response {
        // Subscribe (LISTEN is live) before reading anything, so nothing falls between the read and live.
        let subscription = try await hub.subscribe(topic)
        let start: StreamStart
        do {
            guard let bounds = try await repository.logBounds(tenant: topic.tenant) else {
                throw APIError.notFound("\(topic) does not exist")
            }
            let requested = request.headers[.lastEventID] ?? request.uri.queryParameters.get("since")
            start = StreamStart.decide(requested: requested, bounds: bounds)
        } catch {
            await subscription.cancel()
            throw error
        }
        let session = StreamSession(topic: topic, start: start, hub: hub, repository: repository, logger: context.logger)
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
                try await session.run(subscription: subscription, request: request, writer: &writer)
            })
    }
}

extension HTTPField.Name {
    static let lastEventID = Self("Last-Event-ID")!
}
