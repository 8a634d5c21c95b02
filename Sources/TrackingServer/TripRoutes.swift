import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// The trip lifecycle: `POST /api/v1/bookings/{id}/accept | complete | cancel`, the producer
/// events of the Kafka design (`POST /api/v1/events`), and the tenant's trip settings.
struct TripRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let access: TripAccess
    let validator: PositionValidator

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/bookings/:id/accept", use: accept)
        router.post("/api/v1/bookings/:id/complete") { request, context in try await finish(.completed, request: request, context: context) }
        router.post("/api/v1/bookings/:id/cancel") { request, context in try await finish(.cancelled, request: request, context: context) }
        router.post("/api/v1/events", use: events)
        router.get("/api/v1/settings/trips", use: settings)
        router.put("/api/v1/settings/trips", use: updateSettings)
    }

    struct TripSettingsInput: Decodable {
        let jitterMetres: Double
        let stopRadiusMetres: Double
        let stopSeconds: Double
        enum CodingKeys: String, CodingKey {
            case jitterMetres = "trip_jitter_metres", stopRadiusMetres = "trip_stop_radius_metres", stopSeconds = "trip_stop_seconds"
        }
    }

    struct AcceptBody: Decodable {
        let deviceID: UUID?
        enum CodingKeys: String, CodingKey { case deviceID = "device_id" }
    }

    /// Creates the trip: 201, or 200 when it already runs on that device (idempotent).
    @Sendable func accept(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        let booking = try bookingParameter(context)
        let body = try await request.decodeOptionalJSON(AcceptBody.self)
        let device = try await access.actingDevice(principal, requested: body?.deviceID)
        let outcome = try await repository.acceptTrip(booking, device: device, tenant: principal.tenant)
        try await access.checkAccept(outcome, booking: booking, for: principal)
        return jsonResponse(outcome.json ?? "{}", status: outcome.kind == .created ? .created : .ok)
    }

    /// Completes (delivery confirmed) or cancels the trip; repeating it answers 200 unchanged.
    @Sendable func finish(_ end: TripEnd, request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        let booking = try bookingParameter(context)
        try await access.requireManager(of: booking, for: principal)
        let outcome = try await repository.finishTrip(booking, as: end, tenant: principal.tenant)
        try TripAccess.check(outcome, booking: booking, action: end == .completed ? .complete : .cancel)
        return jsonResponse(outcome.json ?? "{}")
    }

    /// One producer event or an array of them, applied in order in one transaction: all or none.
    @Sendable func events(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        let bytes = try await request.collectBody(limit: ServerConfiguration.maxBodyBytes)
        let events = try ProducerEvent.decodeBody(bytes.readableBytesView, validator: validator)
        // Errors name the event's index only when the body is an array, as for positions.
        let isArray = bytes.readableBytesView.first { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) } == UInt8(ascii: "[")
        var commands: [TripCommand] = []
        var bookings: [BookingID?] = []
        for (index, event) in events.enumerated() {
            let field = "runner_id"
            switch event {
            case .bookingAccepted(let booking, let device):
                commands.append(.accept(booking, device: try await at(isArray ? index : nil) { try await access.actingDevice(principal, requested: device, field: field) }))
                bookings.append(booking)
            case .locationUpdate(let position, let device):
                commands.append(.record(position, device: try await at(isArray ? index : nil) { try await access.actingDevice(principal, requested: device, field: field) }))
                bookings.append(nil)
            case .deliveryConfirmed(let booking), .bookingCancelled(let booking):
                // A booking accepted earlier in this batch is not stored yet: the database checks it then.
                let acceptedHere = events[..<index].contains { if case .bookingAccepted(booking, _) = $0 { true } else { false } }
                if !acceptedHere { try await at(isArray ? index : nil) { try await access.requireManager(of: booking, for: principal) } }
                if case .deliveryConfirmed = event { commands.append(.finish(booking, .completed)) } else { commands.append(.finish(booking, .cancelled)) }
                bookings.append(booking)
            }
        }
        let outcomes: [TripOutcome?]
        do {
            outcomes = try await repository.apply(commands, tenant: principal.tenant)
        } catch let failed as TripCommandFailed {
            let booking = bookings[failed.index]!
            let index = isArray ? failed.index : nil
            switch commands[failed.index] {
            case .accept: try await access.checkAccept(failed.outcome, booking: booking, for: principal, index: index)
            case .finish(_, .completed): try TripAccess.check(failed.outcome, booking: booking, action: .complete, index: index)
            default: try TripAccess.check(failed.outcome, booking: booking, action: .cancel, index: index)
            }
            throw failed
        }
        let results = outcomes.map { outcome in
            outcome.map { #"{"outcome":"\#($0.kind.rawValue)","trip":\#($0.json ?? "null")}"# } ?? #"{"outcome":"recorded"}"#
        }
        return jsonResponse(#"{"applied":\#(events.count),"results":[\#(results.joined(separator: ","))]}"#)
    }

    @Sendable func settings(request: Request, context: AppRequestContext) async throws -> Response {
        try await authenticator.readSettings(request, roles: Set(Role.allCases), what: "trip settings",
                                             load: repository.tripSettings(tenant:))
    }

    /// Replaces the settings new trips copy; trips already accepted keep theirs.
    @Sendable func updateSettings(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        _ = try principal.requireUser([.admin], to: "change trip settings")
        // Decoded as numbers first: a fractional trip_stop_seconds is a 422 naming the field.
        let input = try await request.decodeJSON(TripSettingsInput.self)
        guard input.stopSeconds.isFinite, input.stopSeconds.rounded() == input.stopSeconds, (10...86_400).contains(input.stopSeconds) else {
            throw APIError.invalid("trip_stop_seconds: must be a whole number, 10–86400.", field: "trip_stop_seconds", index: nil)
        }
        let settings = TripSettings(jitterMetres: input.jitterMetres, stopRadiusMetres: input.stopRadiusMetres, stopSeconds: Int(input.stopSeconds))
        guard settings.jitterMetres.isFinite, (0...1_000).contains(settings.jitterMetres) else {
            throw APIError.invalid("trip_jitter_metres: must be 0–1000.", field: "trip_jitter_metres", index: nil)
        }
        guard settings.stopRadiusMetres.isFinite, (1...5_000).contains(settings.stopRadiusMetres) else {
            throw APIError.invalid("trip_stop_radius_metres: must be 1–5000.", field: "trip_stop_radius_metres", index: nil)
        }
        try await repository.updateTripSettings(settings, tenant: principal.tenant)
        return try encodedResponse(settings)
    }

    /// Errors of one event of an array name its index.
    private func at<T>(_ index: Int?, _ body: () async throws -> T) async throws -> T {
        guard let index else { return try await body() }
        do {
            return try await body()
        } catch let error as APIError {
            throw APIError(status: error.status, code: error.code, message: "\(error.message) (event \(index))", field: error.field,
                           index: index, currentStatus: error.currentStatus)
        }
    }
}

/// The booking id of a route's `:id`.
func bookingParameter(_ context: AppRequestContext) throws -> BookingID {
    try bookingParameter(context.parameters.get("id"))
}
