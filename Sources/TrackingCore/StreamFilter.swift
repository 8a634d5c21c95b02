import Foundation

/// Who an event is about, as logged with it: the device and its group and grade at that time,
/// and the fleet route it belongs to (a driver's fix on a route in progress, a visit update).
public struct EventAudience: Sendable, Equatable, Hashable {
    public let device: UUID
    public let group: String
    public let grade: Int
    public let route: UUID?

    public init(device: UUID, group: String, grade: Int, route: UUID? = nil) {
        self.device = device
        self.group = group
        self.grade = grade
        self.route = route
    }
}

/// What one subscriber may see of a stream. Applied to snapshots, replays and live events alike,
/// so a subscriber never receives an event of a device outside it.
public enum StreamFilter: Sendable, Equatable {
    /// The whole tenant (admins and dispatchers without a scope).
    case everything
    /// Devices whose group and grade the scope allows.
    case scope(VisibilityScope)
    /// Every device of one group (a device API key sees its own group, as the SSE bus did).
    case group(String)
    /// One device (a driver sees only their own).
    case device(UUID)
    /// Nothing (a driver with no device linked).
    case nothing
    /// Events of one fleet route (a WebSocket route room, combined with the viewer's filter).
    case route(UUID)
    /// What both allow (a WebSocket device room: the viewer's filter and that one device).
    indirect case both(StreamFilter, StreamFilter)

    /// What a user sees: drivers their own device; everyone else the scope, or the whole tenant
    /// when none is set.
    public static func forUser(role: Role, scope: VisibilityScope?, device: UUID?) -> StreamFilter {
        if role == .driver { return device.map { .device($0) } ?? .nothing }
        return scope.map { .scope($0) } ?? .everything
    }

    private var narrowsToRoute: Bool {
        switch self {
        case .route: return true
        case .both(let first, let second): return first.narrowsToRoute || second.narrowsToRoute
        default: return false
        }
    }

    /// Events about no particular device are visible to everyone who may see the stream.
    public func allows(_ audience: EventAudience?) -> Bool {
        guard let audience else { return self != .nothing && !narrowsToRoute }
        switch self {
        case .everything: return true
        case .scope(let scope): return scope.allows(group: audience.group, grade: audience.grade)
        case .group(let group): return audience.group == group
        case .device(let device): return audience.device == device
        case .nothing: return false
        case .route(let route): return audience.route == route
        case .both(let first, let second): return first.allows(audience) && second.allows(audience)
        }
    }
}
