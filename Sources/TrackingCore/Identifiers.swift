import Foundation

/// Client-supplied identifiers. Both end up in NOTIFY channel names, which PostgresNIO sends
/// unescaped inside `LISTEN "…"`, and channel names are limited to 63 bytes: every id is
/// checked against a strict pattern before it reaches SQL or a channel.
public struct TenantID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public static let rule = "1–40 characters: lowercase letters, digits, '_' or '-', starting with a letter or digit"

    public init?(_ rawValue: String) {
        guard (1...40).contains(rawValue.utf8.count),
              rawValue.utf8.allSatisfy({ Self.isAllowed($0) }),
              let first = rawValue.utf8.first, first != UInt8(ascii: "_"), first != UInt8(ascii: "-")
        else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "-")
    }
}

public struct BookingID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public static let rule = "1–40 characters: letters, digits, '.', '_', ':' or '-'"

    public init?(_ rawValue: String) {
        guard (1...40).contains(rawValue.utf8.count), rawValue.utf8.allSatisfy({ Self.isAllowed($0) }) else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        (byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z")) || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z"))
            || (byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9"))
            || byte == UInt8(ascii: ".") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: ":") || byte == UInt8(ascii: "-")
    }
}

/// A stream a client can subscribe to, and the NOTIFY channel that rings for it.
///
/// Booking channels are named by booking id only (tenant + booking would exceed 63 bytes);
/// the doorbell payload carries the tenant, and the listener drops rings of other tenants.
///
/// A user topic carries no events of the log: it rings when what that user may see changes.
/// An admin topic carries the tenant's events that only admins receive (`ChangeEvent.adminKinds`).
public enum BusTopic: Hashable, Sendable, CustomStringConvertible {
    case tenant(TenantID)
    case booking(TenantID, BookingID)
    case user(TenantID, UUID)
    case admin(TenantID)

    public var tenant: TenantID {
        switch self {
        case .tenant(let tenant), .booking(let tenant, _), .user(let tenant, _), .admin(let tenant): return tenant
        }
    }

    /// Whether the topic gets only some of its tenant's seqs, so a gap in them is not a missed ring.
    public var isSparse: Bool {
        switch self {
        case .booking, .admin: return true
        case .tenant, .user: return false
        }
    }

    /// Whether an event of `kind` goes to this topic's subscribers: admin kinds only to admin topics.
    public func carries(_ kind: String) -> Bool {
        if case .admin = self { return ChangeEvent.adminKinds.contains(kind) }
        return !ChangeEvent.adminKinds.contains(kind)
    }

    public var booking: BookingID? {
        if case .booking(_, let booking) = self { return booking }
        return nil
    }

    public var channel: String {
        switch self {
        case .tenant(let tenant): return "pgtrack.tenant.\(tenant.rawValue)"
        case .booking(_, let booking): return "pgtrack.booking.\(booking.rawValue)"
        // A UUID's text form is strictly hex and dashes: safe inside LISTEN "…".
        case .user(_, let user): return "pgtrack.user.\(user.uuidString.lowercased())"
        case .admin(let tenant): return "pgtrack.admin.\(tenant.rawValue)"
        }
    }

    public var description: String {
        switch self {
        case .tenant(let tenant): return "tenant \(tenant)"
        case .booking(let tenant, let booking): return "booking \(booking) of tenant \(tenant)"
        case .user(let tenant, let user): return "user \(user.uuidString.lowercased()) of tenant \(tenant)"
        case .admin(let tenant): return "admin events of tenant \(tenant)"
        }
    }
}
