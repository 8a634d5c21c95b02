import Foundation

/// A device's name on the wire: Traccar's `uniqueId`, OsmAnd's `id`, OwnTracks' user.
/// Printable ASCII without spaces, 1–100 characters (IMEIs, phone numbers, e-mails, ids).
public struct DeviceUniqueID: Hashable, Sendable, CustomStringConvertible {
    public let rawValue: String
    public static let rule = "1–100 printable ASCII characters without spaces"

    public init?(_ rawValue: String) {
        guard (1...100).contains(rawValue.utf8.count), rawValue.utf8.allSatisfy({ $0 >= 0x21 && $0 <= 0x7E }) else { return nil }
        self.rawValue = rawValue
    }

    public var description: String { rawValue }
}

/// One fix decoded from a device protocol: validated like `POST /api/v1/locations`, with the
/// unique id it names (nil: the protocol named none, the credential's device is meant).
public struct ProtocolFix: Sendable, Equatable {
    public let uniqueID: DeviceUniqueID?
    public let position: ValidatedPosition
    /// The protocol's other name for the device, if it has one (Traccar's `deviceId`).
    public let sourceDevice: SourceDevice?

    public init(uniqueID: DeviceUniqueID?, position: ValidatedPosition, sourceDevice: SourceDevice? = nil) {
        self.uniqueID = uniqueID
        self.position = position
        self.sourceDevice = sourceDevice
    }

    /// A device key posts for its own device only (README "Device protocols"). A fix that names
    /// no unique id goes to the key's device, so a batch whose entries carry different Traccar
    /// `deviceId`s would file several devices' fixes under one: refused whole, naming the first
    /// entry that differs from the batch's first. (Another unique id than the key's is refused
    /// when the fixes are resolved: 403.) An ingest key routes each fix by its unique id instead.
    public static func requireOneSourceDevice(_ fixes: [ProtocolFix]) throws(APIError) {
        guard let first = fixes.lazy.compactMap(\.sourceDevice).first else { return }
        for fix in fixes {
            guard let source = fix.sourceDevice, source.id != first.id else { continue }
            throw .invalid("""
                \(source.field): \(source.id.prefix(40)) belongs to a different device than the key (\(first.field) is \(first.id.prefix(40))); \
                a device key posts for its own device only: post each device's positions with its own key, or all of them \
                with the tenant's ingest key and each position's uniqueId.
                """, field: source.field, index: source.index)
        }
    }
}

/// A device id of the protocol's own that is not its unique id: Traccar's `deviceId` (a row id
/// of the Traccar server). It names no pgtrack device, but two different ones are two devices.
public struct SourceDevice: Sendable, Equatable {
    public let id: String
    /// The field that carried it, as errors name it (`[3].deviceId`), and the batch entry.
    public let field: String
    public let index: Int?

    public init(id: String, field: String, index: Int?) {
        self.id = id
        self.field = field
        self.index = index
    }
}

/// A device event (Traccar: ignitionOn, alarm, geofenceEnter, …).
public struct ProtocolEvent: Sendable, Equatable {
    public let uniqueID: DeviceUniqueID?
    public let type: String
    public let eventTime: Date
    /// The event's own fields besides type and time (attributes flattened in, Traccar ids kept).
    public let attributes: [String: JSONValue]
    /// The position the event refers to, as sent (not stored as a fix: Traccar forwards it separately).
    public let position: [String: JSONValue]?
}

/// Units the protocols use.
public enum SpeedUnit {
    /// Knots (Traccar, OsmAnd) to metres per second.
    public static func knots(_ value: Double) -> Double { value * 1_852 / 3_600 }
    /// Kilometres per hour (OwnTracks) to metres per second.
    public static func kilometresPerHour(_ value: Double) -> Double { value / 3.6 }
}

/// Times as devices write them: unix seconds or milliseconds (number or digits), or a date-time
/// read by `Timestamp.parse` (ISO-8601; without a zone, or as `yyyy-MM-dd HH:mm:ss`: UTC).
/// The Date is handed to the validator as it is (`PositionInput.fixTime`): formatting it to text
/// and parsing that again is what lost a millisecond.
public enum ProtocolTime {
    public static func parse(_ value: JSONValue) -> Date? {
        switch value {
        case .number(let number): return epoch(number)
        case .string(let text): return parse(text)
        default: return nil
        }
    }

    public static func parse(_ text: String) -> Date? {
        let text = text.trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty, text.utf8.count <= 40 else { return nil }
        if text.utf8.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x2E }), let number = Double(text) {
            return epoch(number)
        }
        return Timestamp.parse(text, zone: .utcIfAbsent)
    }

    /// Unix seconds, or milliseconds when the number is too large to be seconds (after 5138 AD).
    static func epoch(_ number: Double) -> Date? {
        guard number.isFinite, number > 0 else { return nil }
        return Date(timeIntervalSince1970: number >= 1e11 ? number / 1_000 : number)
    }
}

/// Reads typed fields of a JSON object, naming `path.key` in every error.
struct JSONFields {
    let values: [String: JSONValue]
    let path: String

    init(_ values: [String: JSONValue], path: String) {
        self.values = values
        self.path = path
    }

    func name(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    func invalid(_ key: String, _ message: String) -> APIError {
        .invalid("\(name(key)): \(message).", field: name(key), index: nil)
    }

    /// A number, or a string holding one; nil when absent or null.
    func number(_ key: String) throws(APIError) -> Double? {
        switch values[key] {
        case nil, .null?: return nil
        case .number(let value)?:
            guard value.isFinite else { throw invalid(key, "must be a finite number") }
            return value
        case .string(let text)?:
            guard let value = Double(text.trimmingCharacters(in: .whitespaces)), value.isFinite else {
                throw invalid(key, "must be a number, got '\(text.prefix(40))'")
            }
            return value
        default: throw invalid(key, "must be a number")
        }
    }

    /// A string (numbers are written as text: some clients send ids as numbers); nil when absent.
    func string(_ key: String) throws(APIError) -> String? {
        switch values[key] {
        case nil, .null?: return nil
        case .string(let text)?: return text
        case .number(let value)?: return value == value.rounded() && abs(value) < 1e15 ? String(Int64(value)) : String(value)
        default: throw invalid(key, "must be a string")
        }
    }

    func bool(_ key: String) throws(APIError) -> Bool? {
        switch values[key] {
        case nil, .null?: return nil
        case .bool(let value)?: return value
        case .string("true")?, .string("1")?, .number(1)?: return true
        case .string("false")?, .string("0")?, .number(0)?: return false
        default: throw invalid(key, "must be true or false")
        }
    }

    func object(_ key: String) throws(APIError) -> JSONFields? {
        switch values[key] {
        case nil, .null?: return nil
        case .object(let inner)?: return JSONFields(inner, path: name(key))
        default: throw invalid(key, "must be a JSON object")
        }
    }

    func time(_ key: String) throws(APIError) -> Date? {
        guard let value = values[key], value != .null else { return nil }
        guard let date = ProtocolTime.parse(value) else {
            throw invalid(key, "is not a time: send unix seconds or milliseconds, or ISO-8601 such as 2026-11-23T10:15:30Z")
        }
        return date
    }

    func uniqueID(_ key: String) throws(APIError) -> DeviceUniqueID? {
        guard let text = try string(key) else { return nil }
        guard let id = DeviceUniqueID(text) else { throw invalid(key, "must be \(DeviceUniqueID.rule)") }
        return id
    }
}

/// Shared by the decoders: a body parsed as JSON, 400 when it is not.
enum ProtocolJSON {
    static func parse(_ bytes: some Collection<UInt8>) throws(APIError) -> JSONValue {
        guard bytes.contains(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) else {
            throw .badRequest("The request body is empty: send a JSON object.", code: "malformed_json")
        }
        try NULCharacter.checkJSON(bytes)
        do {
            return try JSONDecoder().decode(JSONValue.self, from: Data(bytes))
        } catch {
            throw .badRequest("The request body is not valid JSON.", code: "malformed_json")
        }
    }

    /// Heading in [0, 360): 360 is north again; negative means unknown (iOS, Android send -1).
    static func heading(_ value: Double?) -> Double? {
        guard let value, value >= 0 else { return nil }
        return value.truncatingRemainder(dividingBy: 360)
    }

    /// Validates a fix through the same validator as the REST API, naming the protocol's own
    /// field (`lat`, `position.latitude`) in the error instead of the REST name.
    static func validate(_ input: PositionInput, validator: PositionValidator, now: Date,
                         names: [String: String], index: Int?) throws(APIError) -> ValidatedPosition {
        do {
            return try validator.validate(input, index: index, now: now)
        } catch {
            guard let field = error.field, let renamed = names[field] else { throw error }
            var message = error.message
            if message.hasPrefix(field) { message = renamed + message.dropFirst(field.count) }
            throw APIError(status: error.status, code: error.code, message: message, field: renamed, index: error.index)
        }
    }
}

// MARK: - Traccar

/// Traccar's position forwarding (`forward.type=json`: `{"position": {…}, "device": {…}}`),
/// a bare Traccar position object, or an array of them; and its event forwarding.
/// Traccar positions carry `fixTime`, `latitude`, `longitude`, `speed` in knots, `course`,
/// `altitude`, `accuracy`, `valid` and `attributes` (`batteryLevel`, …).
public enum TraccarProtocol {
    public static let maxBatchSize = PositionValidator.maxBatchSize

    public static func decodePositions(_ bytes: some Collection<UInt8>, validator: PositionValidator,
                                       now: Date = Date()) throws(APIError) -> [ProtocolFix] {
        switch try ProtocolJSON.parse(bytes) {
        case .object(let object):
            if case .object(let position)? = object["position"] {
                let device = try JSONFields(object, path: "").object("device")
                return [try fix(JSONFields(position, path: "position"), deviceUniqueID: try device?.uniqueID("uniqueId"),
                                validator: validator, now: now, index: nil)]
            }
            return [try fix(JSONFields(object, path: ""), deviceUniqueID: nil, validator: validator, now: now, index: nil)]
        case .array(let elements):
            guard !elements.isEmpty else { throw .invalid("The array is empty: send at least one position.", field: nil, index: nil) }
            guard elements.count <= maxBatchSize else {
                throw .invalid("A batch holds at most \(maxBatchSize) positions; this one has \(elements.count).", field: nil, index: nil)
            }
            var fixes: [ProtocolFix] = []
            for (index, element) in elements.enumerated() {
                guard case .object(let object) = element else {
                    throw .invalid("position \(index) must be a JSON object.", field: nil, index: index)
                }
                let fields: JSONFields
                let device: JSONFields?
                if case .object(let position)? = object["position"] {
                    fields = JSONFields(position, path: "[\(index)].position")
                    device = try JSONFields(object, path: "[\(index)]").object("device")
                } else {
                    fields = JSONFields(object, path: "[\(index)]")
                    device = nil
                }
                fixes.append(try fix(fields, deviceUniqueID: try device?.uniqueID("uniqueId"), validator: validator, now: now, index: index))
            }
            return fixes
        default:
            throw .badRequest("Send a Traccar position forward ({\"position\":…,\"device\":…}), a position object or an array of them.",
                              code: "malformed_json")
        }
    }

    static func fix(_ fields: JSONFields, deviceUniqueID: DeviceUniqueID?, validator: PositionValidator, now: Date,
                    index: Int?) throws(APIError) -> ProtocolFix {
        var attributes: [String: JSONValue] = [:]
        let given = try fields.object("attributes")
        if let given { attributes = given.values }
        // The unique id: the forward's device, else the position's own (top level or attribute).
        var uniqueID = deviceUniqueID
        if uniqueID == nil { uniqueID = try fields.uniqueID("uniqueId") }
        if uniqueID == nil, let given { uniqueID = try given.uniqueID("uniqueId") }
        attributes["uniqueId"] = nil
        let battery = try given?.number("batteryLevel")
        attributes["batteryLevel"] = nil
        if let valid = try fields.bool("valid") { attributes["valid"] = .bool(valid) }
        if let deviceID = fields.values["deviceId"], deviceID != .null { attributes["traccar_device_id"] = deviceID }
        if let id = fields.values["id"], id != .null { attributes["traccar_position_id"] = id }
        if let outdated = try fields.bool("outdated"), outdated { attributes["outdated"] = .bool(true) }
        if let protocolName = try fields.string("protocol") { attributes["protocol"] = .string(protocolName) }

        var time = try fields.time("fixTime")
        if time == nil { time = try fields.time("deviceTime") }
        let accuracy = try fields.number("accuracy")
        let input = PositionInput(
            latitude: try fields.number("latitude"), longitude: try fields.number("longitude"),
            fixTime: time, speed: try fields.number("speed").map(SpeedUnit.knots),
            heading: ProtocolJSON.heading(try fields.number("course")), altitude: try fields.number("altitude"),
            // Traccar writes 0 for "unknown accuracy".
            accuracy: accuracy.flatMap { $0 > 0 ? $0 : nil },
            battery: battery.map { min(max($0, 0), 100) }, attributes: attributes)
        let names = ["latitude": fields.name("latitude"), "longitude": fields.name("longitude"), "timestamp": fields.name("fixTime"),
                     "speed": fields.name("speed"), "heading": fields.name("course"), "altitude": fields.name("altitude"),
                     "accuracy": fields.name("accuracy"), "battery": fields.name("attributes.batteryLevel"),
                     "attributes": fields.name("attributes")]
        // A deviceId of another type than a number or text is only kept as an attribute, as before.
        let source = (try? fields.string("deviceId")).map { SourceDevice(id: $0, field: fields.name("deviceId"), index: index) }
        return ProtocolFix(uniqueID: uniqueID,
                           position: try ProtocolJSON.validate(input, validator: validator, now: now, names: names, index: index),
                           sourceDevice: source)
    }

    /// `{"event": {"type", "eventTime", "deviceId", "attributes"…}, "position": {…}?, "device": {"uniqueId"…}}`.
    /// The event's time must fall in the window fixes must (`PositionValidator.checkTime`): an
    /// event outside the history window was stored while the position it refers to was refused.
    public static func decodeEvent(_ bytes: some Collection<UInt8>, validator: PositionValidator,
                                   now: Date = Date()) throws(APIError) -> ProtocolEvent {
        guard case .object(let object) = try ProtocolJSON.parse(bytes) else {
            throw .badRequest("Send a Traccar event forward: {\"event\":…,\"position\":…,\"device\":…}.", code: "malformed_json")
        }
        let root = JSONFields(object, path: "")
        guard let event = try root.object("event") else {
            throw .invalid("event: is required (Traccar's event forward: {\"event\":{\"type\":…},\"device\":{\"uniqueId\":…}}).",
                           field: "event", index: nil)
        }
        guard let type = try event.string("type"), (1...100).contains(type.count) else {
            throw event.invalid("type", "is required: Traccar's event type such as ignitionOn, alarm or geofenceEnter")
        }
        var uniqueID = try root.object("device")?.uniqueID("uniqueId")
        if uniqueID == nil { uniqueID = try event.uniqueID("uniqueId") }
        var time = try event.time("eventTime")
        var timeKey = "eventTime"
        if time == nil { (time, timeKey) = (try event.time("serverTime"), "serverTime") }
        if let time { try validator.checkTime(time, field: event.name(timeKey), index: nil, now: now) }
        var attributes: [String: JSONValue] = [:]
        for (key, value) in event.values where !["type", "eventTime", "attributes", "uniqueId"].contains(key) && value != .null {
            attributes[key == "deviceId" ? "traccar_device_id" : key] = value
        }
        if let inner = try event.object("attributes") {
            for (key, value) in inner.values { attributes[key] = value }
        }
        let position = try root.object("position")?.values
        if attributes.contains(where: { $0.key.contains("\u{0}") || $0.value.containsNUL })
            || (position.map { JSONValue.object($0).containsNUL } ?? false) || type.contains("\u{0}") {
            throw .invalid("event: must not contain the NUL character (\\u0000).", field: "event", index: nil)
        }
        return ProtocolEvent(uniqueID: uniqueID, type: type, eventTime: time ?? now, attributes: attributes, position: position)
    }
}

// MARK: - OsmAnd (Traccar Client)

/// The OsmAnd protocol of Traccar Client and OsmAnd: query parameters
/// (`id`, `lat`, `lon` or `location=lat,lon`, `timestamp`, `speed` in knots, `bearing`,
/// `altitude`, `accuracy`, `batt`, anything else kept as an attribute), or the JSON body of
/// newer Traccar Client versions (`{"device_id", "location": {"timestamp", "coords": {…},
/// "battery": {"level" 0–1, "is_charging"}, "is_moving", "odometer", "activity", "extras"}}`,
/// speed in m/s there).
public enum OsmAndProtocol {
    /// Query keys that carry credentials: never stored as attributes.
    public static let credentialKeys: Set<String> = ["api_key", "key"]

    public static func decodeQuery(_ parameters: [(String, String)], validator: PositionValidator,
                                   now: Date = Date()) throws(APIError) -> ProtocolFix {
        var values: [String: String] = [:]
        for (key, value) in parameters where !credentialKeys.contains(key) { values[key] = values[key] ?? value }
        func invalid(_ key: String, _ message: String) -> APIError { .invalid("\(key): \(message).", field: key, index: nil) }
        func number(_ key: String) throws(APIError) -> Double? {
            guard let text = values[key], !text.isEmpty else { return nil }
            guard let value = Double(text), value.isFinite else { throw invalid(key, "must be a number, got '\(text.prefix(40))'") }
            return value
        }
        let idText = values["id"] ?? values["deviceid"]
        guard let idText else {
            throw invalid("id", "is required: the device's unique id (Traccar Client's 'Device identifier')")
        }
        guard let uniqueID = DeviceUniqueID(idText) else { throw invalid("id", "must be \(DeviceUniqueID.rule)") }

        var latitude = try number("lat")
        var longitude = try number("lon")
        if latitude == nil, longitude == nil, let location = values["location"] {
            let parts = location.split(separator: ",", omittingEmptySubsequences: false)
            guard parts.count == 2, let lat = Double(parts[0]), let lon = Double(parts[1]) else {
                throw invalid("location", "must be 'latitude,longitude', got '\(location.prefix(60))'")
            }
            (latitude, longitude) = (lat, lon)
        }
        var time = now
        if let text = values["timestamp"], !text.isEmpty {
            guard let parsed = ProtocolTime.parse(text) else {
                throw invalid("timestamp", "'\(text.prefix(40))' is not unix seconds or milliseconds, ISO-8601 or yyyy-MM-dd HH:mm:ss")
            }
            time = parsed
        }
        var attributes: [String: JSONValue] = [:]
        let known: Set<String> = ["id", "deviceid", "lat", "lon", "location", "timestamp", "speed", "bearing", "heading",
                                  "altitude", "accuracy", "batt"]
        for (key, value) in values where !known.contains(key) {
            if key == "valid" {
                attributes["valid"] = .bool(!(value == "false" || value == "0"))
            } else if let number = Double(value), number.isFinite, !value.isEmpty {
                attributes[key] = .number(number)
            } else if value == "true" || value == "false" {
                attributes[key] = .bool(value == "true")
            } else {
                attributes[key] = .string(value)
            }
        }
        let speed = try number("speed")
        let accuracy = try number("accuracy")
        var heading = try number("bearing")
        if heading == nil { heading = try number("heading") }
        let input = PositionInput(
            latitude: latitude, longitude: longitude, fixTime: time,
            speed: speed.flatMap { $0 >= 0 ? SpeedUnit.knots($0) : nil },
            heading: ProtocolJSON.heading(heading), altitude: try number("altitude"),
            accuracy: accuracy.flatMap { $0 >= 0 ? $0 : nil }, battery: try number("batt"), attributes: attributes)
        let names = ["latitude": "lat", "longitude": "lon", "speed": "speed", "heading": "bearing", "accuracy": "accuracy",
                     "battery": "batt", "altitude": "altitude", "attributes": "attributes"]
        return ProtocolFix(uniqueID: uniqueID,
                           position: try ProtocolJSON.validate(input, validator: validator, now: now, names: names, index: nil))
    }

    /// The JSON body; `location` may be one object or an array of them.
    public static func decodeJSON(_ bytes: some Collection<UInt8>, validator: PositionValidator,
                                  now: Date = Date()) throws(APIError) -> [ProtocolFix] {
        guard case .object(let object) = try ProtocolJSON.parse(bytes) else {
            throw .badRequest("Send {\"device_id\": …, \"location\": {…}} as Traccar Client does.", code: "malformed_json")
        }
        let root = JSONFields(object, path: "")
        guard let uniqueID = try root.uniqueID("device_id") else {
            throw root.invalid("device_id", "is required: the device's unique id (Traccar Client's 'Device identifier')")
        }
        switch object["location"] {
        case .object(let location)?:
            return [try fix(JSONFields(location, path: "location"), uniqueID: uniqueID, validator: validator, now: now, index: nil)]
        case .array(let locations)?:
            guard !locations.isEmpty, locations.count <= PositionValidator.maxBatchSize else {
                throw root.invalid("location", "must hold 1–\(PositionValidator.maxBatchSize) locations")
            }
            var fixes: [ProtocolFix] = []
            for (index, element) in locations.enumerated() {
                guard case .object(let location) = element else { throw root.invalid("location[\(index)]", "must be a JSON object") }
                fixes.append(try fix(JSONFields(location, path: "location[\(index)]"), uniqueID: uniqueID, validator: validator,
                                     now: now, index: index))
            }
            return fixes
        default:
            throw root.invalid("location", "is required: {\"timestamp\": …, \"coords\": {\"latitude\": …, \"longitude\": …}}")
        }
    }

    static func fix(_ location: JSONFields, uniqueID: DeviceUniqueID, validator: PositionValidator, now: Date,
                    index: Int?) throws(APIError) -> ProtocolFix {
        guard let coords = try location.object("coords") else {
            throw location.invalid("coords", "is required: {\"latitude\": …, \"longitude\": …}")
        }
        var attributes: [String: JSONValue] = [:]
        if let extras = try location.object("extras") { attributes = extras.values }
        var battery: Double?
        if let batteryFields = try location.object("battery") {
            if let level = try batteryFields.number("level"), level >= 0 {
                guard level <= 1 else { throw batteryFields.invalid("level", "must be between 0 and 1, got \(level)") }
                battery = (level * 1_000).rounded() / 10
            }
            if let charging = try batteryFields.bool("is_charging") { attributes["charge"] = .bool(charging) }
        }
        if let moving = try location.bool("is_moving") { attributes["motion"] = .bool(moving) }
        if let odometer = try location.number("odometer") { attributes["odometer"] = .number(odometer) }
        if let event = try location.string("event") { attributes["event"] = .string(event) }
        if let activity = try location.object("activity"), let type = try activity.string("type") {
            attributes["activity"] = .string(type)
        }
        if let mock = try location.bool("mock"), mock { attributes["mock"] = .bool(true) }
        let time = try location.time("timestamp") ?? now
        let speed = try coords.number("speed")
        let accuracy = try coords.number("accuracy")
        let input = PositionInput(
            latitude: try coords.number("latitude"), longitude: try coords.number("longitude"), fixTime: time,
            speed: speed.flatMap { $0 >= 0 ? $0 : nil }, heading: ProtocolJSON.heading(try coords.number("heading")),
            altitude: try coords.number("altitude"), accuracy: accuracy.flatMap { $0 >= 0 ? $0 : nil }, battery: battery,
            attributes: attributes)
        let names = ["latitude": coords.name("latitude"), "longitude": coords.name("longitude"),
                     "timestamp": location.name("timestamp"), "speed": coords.name("speed"), "heading": coords.name("heading"),
                     "altitude": coords.name("altitude"), "accuracy": coords.name("accuracy"),
                     "battery": location.name("battery.level"), "attributes": location.name("extras")]
        return ProtocolFix(uniqueID: uniqueID,
                           position: try ProtocolJSON.validate(input, validator: validator, now: now, names: names, index: index))
    }
}

// MARK: - OwnTracks

/// OwnTracks' HTTP mode: one JSON message per request; `_type: location` carries `lat`, `lon`,
/// `tst` (unix seconds), `acc`, `alt`, `vel` (km/h), `cog`, `batt` (%), `tid`. Other `_type`s
/// (transition, waypoint, lwt, …) are accepted and ignored. The user is the HTTP Basic user
/// (or `X-Limit-U`); it names the device by unique id.
public enum OwnTracksProtocol {
    /// The fix of a location message, nil for any other message type.
    public static func decode(_ bytes: some Collection<UInt8>, uniqueID: DeviceUniqueID?, validator: PositionValidator,
                              now: Date = Date()) throws(APIError) -> ProtocolFix? {
        guard case .object(let object) = try ProtocolJSON.parse(bytes) else {
            throw .badRequest("Send one OwnTracks message: a JSON object with _type.", code: "malformed_json")
        }
        let fields = JSONFields(object, path: "")
        guard let type = try fields.string("_type") else {
            throw fields.invalid("_type", "is required (OwnTracks messages name their type, e.g. \"location\")")
        }
        guard type == "location" else { return nil }
        guard let time = try fields.time("tst") else { throw fields.invalid("tst", "is required: the fix time in unix seconds") }
        var attributes: [String: JSONValue] = [:]
        let known: Set<String> = ["_type", "lat", "lon", "tst", "acc", "alt", "vel", "cog", "batt"]
        for (key, value) in object where !known.contains(key) && value != .null { attributes[key] = value }
        let speed = try fields.number("vel")
        let input = PositionInput(
            latitude: try fields.number("lat"), longitude: try fields.number("lon"), fixTime: time,
            speed: speed.flatMap { $0 >= 0 ? SpeedUnit.kilometresPerHour($0) : nil },
            heading: ProtocolJSON.heading(try fields.number("cog")), altitude: try fields.number("alt"),
            accuracy: try fields.number("acc").flatMap { $0 >= 0 ? $0 : nil }, battery: try fields.number("batt"),
            attributes: attributes)
        let names = ["latitude": "lat", "longitude": "lon", "timestamp": "tst", "speed": "vel", "heading": "cog",
                     "altitude": "alt", "accuracy": "acc", "battery": "batt", "attributes": "attributes"]
        return ProtocolFix(uniqueID: uniqueID,
                           position: try ProtocolJSON.validate(input, validator: validator, now: now, names: names, index: nil))
    }
}
