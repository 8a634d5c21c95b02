/// One row of the change log as subscribers see it: its seq, its kind (the SSE event name) and
/// its JSON payload, kept as text so it is encoded once and written to every subscriber as is.
public struct ChangeEvent: Sendable, Equatable {
    public let seq: Int64
    public let kind: String
    public let json: String

    public init(seq: Int64, kind: String, json: String) {
        self.seq = seq
        self.kind = kind
        self.json = json
    }
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
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        tenant = try container.decode(String.self, forKey: .tenant)
        booking = try container.decodeIfPresent(String.self, forKey: .booking)
        first = try container.decode(Int64.self, forKey: .first)
        last = try container.decode(Int64.self, forKey: .last)
        count = try container.decode(Int.self, forKey: .count)
        events = try container.decodeIfPresent([InlineEvent].self, forKey: .events)?
            .map { ChangeEvent(seq: $0.s, kind: $0.k, json: $0.d) }
    }
}
