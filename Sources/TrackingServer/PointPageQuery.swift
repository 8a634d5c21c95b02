import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// The query of a paged playback read, `?from=&to=&limit=&cursor=`: a trip's points and a
/// driver's or route's history check it the same way, with the same messages.
struct PointPageQuery {
    static let defaultLimit = 100
    let from: Date?
    let to: Date?
    let limit: Int
    let cursor: PointCursor?

    init(_ request: Request, maxPageSize: Int) throws {
        let query = request.uri.queryParameters
        from = try Self.time(query.get("from"), name: "from")
        to = try Self.time(query.get("to"), name: "to")
        if let from, let to, to < from {
            throw APIError.invalid("to: must not be before from.", field: "to", index: nil)
        }
        var limit = Self.defaultLimit
        if let text = query.get("limit") {
            guard let value = Int(text), (1...maxPageSize).contains(value) else {
                throw APIError.invalid("limit: must be 1–\(maxPageSize).", field: "limit", index: nil)
            }
            limit = value
        }
        self.limit = limit
        if let text = query.get("cursor") {
            guard let parsed = PointCursor(text) else {
                throw APIError.invalid("cursor: pass the next_cursor of the previous page unchanged.", field: "cursor", index: nil)
            }
            cursor = parsed
        } else {
            cursor = nil
        }
    }

    static func time(_ text: String?, name: String) throws -> Date? {
        guard let text else { return nil }
        guard let date = Timestamp.parse(text) else {
            throw APIError.invalid("\(name): must be an ISO-8601 time such as 2026-11-23T08:00:00Z.", field: name, index: nil)
        }
        return date
    }
}
