import Foundation

/// Turns request bodies into validated positions, or an `APIError` that names the field and,
/// for arrays, the index of the first bad element. A batch is all or nothing.
public struct PositionValidator: Sendable {
    public static let maxBatchSize = 1_000

    /// How far in the future a fix may be (device clocks drift; anything beyond is a bug).
    public var maxFutureSkew: TimeInterval
    /// How far in the past a fix may be: the partition window kept for history.
    public var maxAge: TimeInterval

    public init(maxFutureSkew: TimeInterval = 300, maxAge: TimeInterval = 30 * 86_400) {
        self.maxFutureSkew = maxFutureSkew
        self.maxAge = maxAge
    }

    /// Decodes one position object or an array of them.
    public func decodeBody(_ bytes: some Collection<UInt8>, now: Date = Date()) throws(APIError) -> [ValidatedPosition] {
        guard let first = bytes.first(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) else {
            throw .badRequest("The request body is empty: send a position object or an array of positions.", code: "malformed_json")
        }
        try NULCharacter.checkJSON(bytes)
        let data = Data(bytes)
        let decoder = JSONDecoder()
        let inputs: [PositionInput]
        let isArray = first == UInt8(ascii: "[")
        do {
            if isArray {
                inputs = try decoder.decode([PositionInput].self, from: data)
            } else if first == UInt8(ascii: "{") {
                inputs = [try decoder.decode(PositionInput.self, from: data)]
            } else {
                throw APIError.badRequest("The request body must be a JSON object or array.", code: "malformed_json")
            }
        } catch let error as APIError {
            throw error
        } catch let error as DecodingError {
            throw Self.describe(error)
        } catch {
            throw .badRequest("The request body is not valid JSON.", code: "malformed_json")
        }
        if isArray && inputs.isEmpty {
            throw .invalid("The array is empty: send at least one position.", field: nil, index: nil)
        }
        if inputs.count > Self.maxBatchSize {
            throw .invalid("A batch holds at most \(Self.maxBatchSize) positions; this one has \(inputs.count).", field: nil, index: nil)
        }
        var positions: [ValidatedPosition] = []
        positions.reserveCapacity(inputs.count)
        for (offset, input) in inputs.enumerated() {
            positions.append(try validate(input, index: isArray ? offset : nil, now: now))
        }
        return positions
    }

    public func validate(_ input: PositionInput, index: Int?, now: Date = Date()) throws(APIError) -> ValidatedPosition {
        func fail(_ field: String, _ message: String) -> APIError {
            let location = index.map { " (position \($0))" } ?? ""
            return .invalid("\(field): \(message)\(location).", field: field, index: index)
        }
        func finite(_ value: Double?, _ field: String) throws(APIError) -> Double? {
            guard let value else { return nil }
            guard value.isFinite else { throw fail(field, "must be a finite number") }
            return value
        }

        guard let latitude = try finite(input.latitude, "latitude") else { throw fail("latitude", "is required") }
        guard (-90...90).contains(latitude) else { throw fail("latitude", "must be between -90 and 90, got \(latitude)") }
        guard let longitude = try finite(input.longitude, "longitude") else { throw fail("longitude", "is required") }
        guard (-180...180).contains(longitude) else { throw fail("longitude", "must be between -180 and 180, got \(longitude)") }

        let fixTime: Date
        if let given = input.fixTime {
            fixTime = given
        } else {
            guard let timestampText = input.timestamp else { throw fail("timestamp", "is required (ISO-8601, e.g. 2026-11-23T10:15:30Z)") }
            guard let parsed = Timestamp.parse(timestampText) else {
                throw fail("timestamp", "'\(timestampText.prefix(40))' is not an ISO-8601 date-time such as 2026-11-23T10:15:30.250Z")
            }
            fixTime = parsed
        }
        try checkTime(fixTime, field: "timestamp", index: index, now: now)

        let speed = try finite(input.speed, "speed")
        if let speed, speed < 0 { throw fail("speed", "must not be negative (metres per second), got \(speed)") }
        let heading = try finite(input.heading, "heading")
        if let heading, !(heading >= 0 && heading < 360) { throw fail("heading", "must be in [0, 360) degrees, got \(heading)") }
        let altitude = try finite(input.altitude, "altitude")
        let accuracy = try finite(input.accuracy, "accuracy")
        if let accuracy, accuracy < 0 { throw fail("accuracy", "must not be negative (metres), got \(accuracy)") }
        let battery = try finite(input.battery, "battery")
        if let battery, !(0...100).contains(battery) { throw fail("battery", "must be a percentage between 0 and 100, got \(battery)") }

        var booking: BookingID?
        if let raw = input.bookingID {
            guard let parsed = BookingID(raw) else { throw fail("booking_id", "must be \(BookingID.rule)") }
            booking = parsed
        }
        let attributes = input.attributes ?? [:]
        // PostgreSQL's jsonb cannot hold U+0000; say so here instead of failing in the database.
        if attributes.contains(where: { $0.key.contains("\u{0}") || $0.value.containsNUL }) {
            throw fail("attributes", "must not contain the NUL character (\\u0000)")
        }
        return ValidatedPosition(
            latitude: latitude, longitude: longitude, fixTime: fixTime, speed: speed, heading: heading,
            altitude: altitude, accuracy: accuracy, battery: battery, bookingID: booking,
            attributes: attributes)
    }

    /// The one rule for how far a device's time may be from the server clock, for fixes and
    /// device events (Traccar's) alike: at most `maxFutureSkew` ahead, at most `maxAge` behind
    /// (the window history keeps). A 422 naming `field` as the caller's body names it.
    public func checkTime(_ time: Date, field: String, index: Int?, now: Date) throws(APIError) {
        let location = index.map { " (position \($0))" } ?? ""
        if time.timeIntervalSince(now) > maxFutureSkew {
            throw .invalid("\(field): is more than \(Int(maxFutureSkew)) seconds in the future; check the device clock\(location).",
                           field: field, index: index)
        }
        if now.timeIntervalSince(time) > maxAge {
            throw .invalid("\(field): is older than the \(Int(maxAge / 86_400))-day window that history keeps\(location).",
                           field: field, index: index)
        }
    }

    /// Maps a decoding failure to 400 (not JSON at all) or 422 (JSON with a wrongly typed field).
    static func describe(_ error: DecodingError) -> APIError {
        func locate(_ path: [any CodingKey]) -> (field: String?, index: Int?) {
            var index: Int?
            var names: [String] = []
            for key in path {
                if let int = key.intValue, index == nil, names.isEmpty { index = int } else { names.append(key.intValue.map { "[\($0)]" } ?? key.stringValue) }
            }
            return (names.isEmpty ? nil : names.joined(separator: "."), index)
        }
        switch error {
        case .typeMismatch(let type, let context):
            let (field, index) = locate(context.codingPath)
            if field == nil, let index {
                return .invalid("position \(index) must be a JSON object.", field: nil, index: index)
            }
            if field == nil {
                return .badRequest("Expected a position object or an array of positions.", code: "malformed_json")
            }
            let expected = type == Double.self ? "a number" : type == String.self ? "a string" : "a value of type \(type)"
            return .invalid("\(field ?? "value"): must be \(expected)\(index.map { " (position \($0))" } ?? "").", field: field, index: index)
        case .valueNotFound(_, let context):
            let (field, index) = locate(context.codingPath)
            return .invalid("\(field ?? "value"): must not be null\(index.map { " (position \($0))" } ?? "").", field: field, index: index)
        case .keyNotFound(let key, let context):
            let (_, index) = locate(context.codingPath)
            return .invalid("\(key.stringValue): is required.", field: key.stringValue, index: index)
        case .dataCorrupted(let context):
            let (field, index) = locate(context.codingPath)
            if let field {
                return .invalid("\(field): is not a valid value\(index.map { " (position \($0))" } ?? "").", field: field, index: index)
            }
            return .badRequest("The request body is not valid JSON.", code: "malformed_json")
        @unknown default:
            return .badRequest("The request body is not valid JSON.", code: "malformed_json")
        }
    }
}
