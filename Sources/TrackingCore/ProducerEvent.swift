import Foundation

/// One event as the booking and runner services of the Kafka design emit it, accepted by
/// `POST /api/v1/events` so a Kafka-to-HTTP bridge or a script can feed pgtrack unchanged.
///
/// An event is an object naming itself in `event_type` (or `type`, `event`), with its fields in
/// `payload` (or `data`) or beside the name. Runners are devices: `runner_id` (or `device_id`)
/// is a device id; a caller that is itself a device or a driver may leave it out.
public enum ProducerEvent: Sendable, Equatable {
    case bookingAccepted(BookingID, device: UUID?)
    case locationUpdate(ValidatedPosition, device: UUID?)
    case deliveryConfirmed(BookingID)
    case bookingCancelled(BookingID)

    public static let maxBatchSize = 1_000
    public static let names = ["booking.accepted", "runner.location_update", "booking.delivery_confirmed", "booking.cancelled"]

    /// Decodes one event object or an array of them; every event is validated before any is applied.
    public static func decodeBody(_ bytes: some Collection<UInt8>, validator: PositionValidator, now: Date = Date()) throws(APIError) -> [ProducerEvent] {
        let body = try JSONBody.decode(JSONValue.self, from: bytes)
        let objects: [JSONValue]
        var indexed = true
        switch body {
        case .array(let items):
            guard !items.isEmpty else { throw .invalid("The array is empty: send at least one event.", field: nil, index: nil) }
            guard items.count <= maxBatchSize else {
                throw .invalid("A batch holds at most \(maxBatchSize) events; this one has \(items.count).", field: nil, index: nil)
            }
            objects = items
        case .object:
            objects = [body]
            indexed = false
        default:
            throw .badRequest("The request body must be an event object or an array of events.", code: "malformed_json")
        }
        var events: [ProducerEvent] = []
        for (offset, object) in objects.enumerated() {
            events.append(try decode(object, index: indexed ? offset : nil, validator: validator, now: now))
        }
        return events
    }

    static func decode(_ value: JSONValue, index: Int?, validator: PositionValidator, now: Date) throws(APIError) -> ProducerEvent {
        let location = index.map { " (event \($0))" } ?? ""
        func fail(_ field: String, _ message: String) -> APIError {
            .invalid("\(field): \(message)\(location).", field: field, index: index)
        }
        guard case .object(let envelope) = value else { throw fail("event", "must be a JSON object") }
        guard let name = envelope.string("event_type") ?? envelope.string("type") ?? envelope.string("event") else {
            throw fail("event_type", "is required: one of \(names.joined(separator: ", "))")
        }
        var fields = envelope
        if case .object(let inner)? = envelope["payload"] ?? envelope["data"] { fields = inner }

        func booking() throws(APIError) -> BookingID {
            guard let text = fields.string("booking_id") else { throw fail("booking_id", "is required") }
            guard let id = BookingID(text) else { throw fail("booking_id", "must be \(BookingID.rule)") }
            return id
        }
        func device() throws(APIError) -> UUID? {
            for key in ["runner_id", "device_id"] {
                guard let raw = fields[key], raw != .null else { continue }
                guard let text = fields.string(key), let id = UUID(uuidString: text) else { throw fail(key, "must be a device id (a UUID)") }
                return id
            }
            return nil
        }

        switch name {
        case "booking.accepted":
            return .bookingAccepted(try booking(), device: try device())
        case "booking.delivery_confirmed", "booking.completed":
            return .deliveryConfirmed(try booking())
        case "booking.cancelled":
            return .bookingCancelled(try booking())
        case "runner.location_update":
            // speed_kmh and heading_degrees are the runner service's names; speed (m/s) and heading also work.
            let speed = fields.number("speed") ?? fields.number("speed_kmh").map { $0 / 3.6 }
            let input = PositionInput(
                latitude: fields.number("latitude") ?? fields.number("lat"),
                longitude: fields.number("longitude") ?? fields.number("lng") ?? fields.number("lon"),
                timestamp: fields.string("timestamp") ?? fields.string("occurred_at"),
                speed: speed,
                heading: fields.number("heading") ?? fields.number("heading_degrees"),
                altitude: fields.number("altitude"),
                accuracy: fields.number("accuracy"),
                battery: fields.number("battery"),
                bookingID: fields.string("booking_id"))
            let position: ValidatedPosition
            do {
                position = try validator.validate(input, index: index, now: now)
            } catch {
                throw APIError.invalid(error.message.replacingOccurrences(of: "(position ", with: "(event "), field: error.field, index: index)
            }
            return .locationUpdate(position, device: try device())
        default:
            throw fail("event_type", "\"\(name.prefix(60))\" is not an event pgtrack handles; send one of \(names.joined(separator: ", "))")
        }
    }
}

extension [String: JSONValue] {
    func string(_ key: String) -> String? {
        if case .string(let value)? = self[key] { return value }
        return nil
    }

    func number(_ key: String) -> Double? {
        if case .number(let value)? = self[key] { return value }
        return nil
    }
}
