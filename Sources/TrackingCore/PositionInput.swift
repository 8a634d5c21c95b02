import Foundation

/// A position as devices post it to `POST /api/v1/locations`, before validation.
public struct PositionInput: Decodable, Sendable {
    public var latitude: Double?
    public var longitude: Double?
    public var timestamp: String?
    /// The fix time a device protocol already read (`ProtocolTime`); used instead of `timestamp`.
    /// Never decoded from a body: it spares the protocols a text round trip that lost precision.
    public var fixTime: Date?
    public var speed: Double?
    public var heading: Double?
    public var altitude: Double?
    public var accuracy: Double?
    public var battery: Double?
    public var bookingID: String?
    public var attributes: [String: JSONValue]?

    enum CodingKeys: String, CodingKey {
        case latitude, longitude, timestamp, speed, heading, altitude, accuracy, battery, attributes
        case bookingID = "booking_id"
    }

    public init(latitude: Double?, longitude: Double?, timestamp: String? = nil, fixTime: Date? = nil, speed: Double? = nil,
                heading: Double? = nil, altitude: Double? = nil, accuracy: Double? = nil,
                battery: Double? = nil, bookingID: String? = nil, attributes: [String: JSONValue]? = nil) {
        self.latitude = latitude
        self.longitude = longitude
        self.timestamp = timestamp
        self.fixTime = fixTime
        self.speed = speed
        self.heading = heading
        self.altitude = altitude
        self.accuracy = accuracy
        self.battery = battery
        self.bookingID = bookingID
        self.attributes = attributes
    }
}

/// A position that passed validation, ready for the store.
public struct ValidatedPosition: Sendable, Equatable {
    public let latitude: Double
    public let longitude: Double
    public let fixTime: Date
    public let speed: Double?
    public let heading: Double?
    public let altitude: Double?
    public let accuracy: Double?
    public let battery: Double?
    public let bookingID: BookingID?
    public let attributes: [String: JSONValue]

    public init(latitude: Double, longitude: Double, fixTime: Date, speed: Double? = nil, heading: Double? = nil,
                altitude: Double? = nil, accuracy: Double? = nil, battery: Double? = nil, bookingID: BookingID? = nil,
                attributes: [String: JSONValue] = [:]) {
        self.latitude = latitude
        self.longitude = longitude
        self.fixTime = fixTime
        self.speed = speed
        self.heading = heading
        self.altitude = altitude
        self.accuracy = accuracy
        self.battery = battery
        self.bookingID = bookingID
        self.attributes = attributes
    }
}
