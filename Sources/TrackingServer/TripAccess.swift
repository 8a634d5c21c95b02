import Foundation
import TrackingCore
import TrackingStore

/// Who may act on which trip. Devices and drivers act for their own device; admins and
/// dispatchers for any device their scope shows; viewers only read. A trip the caller may not
/// see answers 404, exactly like a booking that does not exist.
struct TripAccess: Sendable {
    let repository: TrackingRepository
    let authenticator: Authenticator

    /// The device a caller accepts a booking or posts a position for. `requested` is the device
    /// named in the request, required for admins and dispatchers.
    func actingDevice(_ principal: Principal, requested: UUID?, field: String = "device_id") async throws -> UUID {
        switch principal {
        case .device(let device):
            guard requested == nil || requested == device.id else {
                throw APIError.forbidden("A device key acts only for its own device (\(device.id.uuidString.lowercased())).")
            }
            return device.id
        case .user(let user) where user.role == .driver:
            guard let own = user.deviceID else {
                throw APIError.forbidden("No device is linked to this driver; an admin links one with device_id.")
            }
            guard requested == nil || requested == own else {
                throw APIError.forbidden("A driver acts only for their own device (\(own.uuidString.lowercased())).")
            }
            return own
        case .user(let user):
            guard user.role == .admin || user.role == .dispatcher else {
                throw APIError.forbidden("Only devices, drivers, dispatchers and admins manage trips; you are \(user.role.rawValue).")
            }
            guard let requested else {
                throw APIError.invalid("\(field): is required when a \(user.role.rawValue) acts for a device.", field: field, index: nil)
            }
            guard let device = try await repository.device(requested, tenant: user.tenant),
                  authenticator.visibility(of: principal).allows(device.audience)
            else {
                throw APIError.notFound("No device \(requested.uuidString.lowercased()).")
            }
            return requested
        }
    }

    /// The trip of `booking`, if the caller may see it.
    func visibleTrip(_ booking: BookingID, for principal: Principal) async throws -> TripRecord {
        guard let trip = try await repository.trip(booking, tenant: principal.tenant),
              authenticator.visibility(of: principal).allows(trip.audience)
        else {
            throw APIError.notFound("No trip for booking \(booking).")
        }
        return trip
    }

    /// Checks that the caller may complete or cancel `booking`'s trip.
    func requireManager(of booking: BookingID, for principal: Principal) async throws {
        let trip = try await visibleTrip(booking, for: principal)
        switch principal {
        case .device(let device) where device.id != trip.audience.device:
            throw APIError.forbidden("This trip runs on another device; a device key manages only its own trips.")
        case .user(let user) where user.role == .viewer:
            throw APIError.forbidden("Viewers cannot change trips.")
        case .user(let user) where user.role == .driver && user.deviceID != trip.audience.device:
            throw APIError.notFound("No trip for booking \(booking).")
        default:
            return
        }
    }

    /// Whether the caller may see `booking`'s trip (false when there is none).
    func sees(_ booking: BookingID, for principal: Principal) async throws -> Bool {
        guard let trip = try await repository.trip(booking, tenant: principal.tenant) else { return false }
        return authenticator.visibility(of: principal).allows(trip.audience)
    }

    /// An accept as the HTTP answer. One that lost to a device the caller may not see says only
    /// that the booking is taken: not the trip's status, which would describe a trip the caller
    /// is not allowed to read.
    func checkAccept(_ outcome: TripOutcome, booking: BookingID, for principal: Principal, index: Int? = nil) async throws {
        if outcome.kind == .conflict, try await !sees(booking, for: principal) {
            let at = index.map { " (event \($0))" } ?? ""
            throw APIError.conflict("Booking \(booking) is taken by another device\(at); accept another booking.", index: index)
        }
        try Self.check(outcome, booking: booking, action: .accept, index: index)
    }

    enum Action { case accept, complete, cancel }

    /// A lifecycle outcome as the HTTP answer: nothing for success, else 404 or 409 with the
    /// current status and what to do about it.
    static func check(_ outcome: TripOutcome, booking: BookingID, action: Action, index: Int? = nil) throws {
        let at = index.map { " (event \($0))" } ?? ""
        switch outcome.kind {
        case .created, .changed, .unchanged:
            return
        case .notFound:
            let message = action == .accept ? "No such device\(at)." : "No trip for booking \(booking)\(at); accept it first."
            throw APIError(status: 404, code: "not_found", message: message, index: index)
        case .deviceBusy:
            throw APIError.conflict("The device is on booking \(outcome.other ?? "?") already\(at); complete or cancel that trip first.",
                                    index: index)
        case .conflict:
            let status = outcome.status ?? "unknown"
            let hint: String
            switch (action, status) {
            case (.accept, "accepted"), (.accept, "in_progress"): hint = "another device runs it"
            case (.complete, "accepted"): hint = "it has no positions yet, so it cannot be completed; cancel it, or post a position first"
            default: hint = "it has ended"
            }
            throw APIError.conflict("The trip of booking \(booking) is \(status)\(at): \(hint).", currentStatus: status, index: index)
        }
    }
}
