import Foundation

/// One row of the change log as subscribers see it: its seq, its kind (the SSE event name) and
/// its JSON payload, kept as text so it is encoded once and written to every subscriber as is.
/// `audience` is the device it is about (nil for events about no device), for scope filtering.
public struct ChangeEvent: Sendable, Equatable {
    public let seq: Int64
    public let kind: String
    public let json: String
    public let audience: EventAudience?

    public init(seq: Int64, kind: String, json: String, audience: EventAudience? = nil) {
        self.seq = seq
        self.kind = kind
        self.json = json
        self.audience = audience
    }

    /// The kind delivered on a user topic: what the user may see may have changed; re-read it.
    /// Its seq is the user's new scope version (0 when unknown, -1 when the user was deleted).
    public static let scopeRecheck = "scope_recheck"

    /// Kinds only a tenant's admins receive, on the admin topic (SQL: pgtrack_admin_kinds()).
    public static let adminKinds: Set<String> = ["cdc_lag"]
}

/// The payload of a NOTIFY from `pgtrack_notify_logged` (SQL/020_change_log.sql).
///
/// It names the seq range `first...last` of one tenant (and booking, on a booking channel);
/// `events` is present when they fit in the 8000-byte NOTIFY limit, otherwise the listener reads
/// the range from the change log.
public struct Doorbell: Sendable, Decodable, Equatable {
    public let tenant: String
    public let booking: String?
    public let first: Int64
    public let last: Int64
    public let count: Int
    public let events: [ChangeEvent]?

    enum CodingKeys: String, CodingKey {
        case tenant = "t", booking = "b", first = "f", last = "l", count = "n", events = "e"
    }

    struct InlineEvent: Decodable {
        let s: Int64
        let k: String
        let d: String
        /// Device, group and grade: the audience.
        let v: UUID?
        let g: String?
        let r: Int?
        /// The fleet route, for route rooms.
        let o: UUID?

        var event: ChangeEvent {
            let audience = v.map { EventAudience(device: $0, group: g ?? "", grade: r ?? 0, route: o) }
            return ChangeEvent(seq: s, kind: k, json: d, audience: audience)
        }
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        tenant = try container.decode(String.self, forKey: .tenant)
        booking = try container.decodeIfPresent(String.self, forKey: .booking)
        first = try container.decode(Int64.self, forKey: .first)
        last = try container.decode(Int64.self, forKey: .last)
        count = try container.decode(Int.self, forKey: .count)
        events = try container.decodeIfPresent([InlineEvent].self, forKey: .events)?
            .map(\.event)
    }
}

/// The payload of a NOTIFY on a user's channel (SQL/050_user_scope.sql): the user's scope or
/// role changed to `version`, or the user was deleted (`version` -1).
public struct UserDoorbell: Sendable, Decodable, Equatable {
    public let tenant: String
    public let user: UUID
    public let version: Int64

    enum CodingKeys: String, CodingKey { case tenant = "t", user = "u", version = "v" }
}
