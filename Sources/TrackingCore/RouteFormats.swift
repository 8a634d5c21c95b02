import Foundation

/// One stored waypoint of a trip, in track order.
public struct RoutePoint: Sendable, Equatable {
    public let id: Int64
    public let fixTime: Date
    public let latitude: Double
    public let longitude: Double
    public let speed: Double?
    public let heading: Double?
    public let altitude: Double?
    public let accuracy: Double?

    public init(id: Int64, fixTime: Date, latitude: Double, longitude: Double, speed: Double?, heading: Double?,
                altitude: Double?, accuracy: Double?) {
        self.id = id
        self.fixTime = fixTime
        self.latitude = latitude
        self.longitude = longitude
        self.speed = speed
        self.heading = heading
        self.altitude = altitude
        self.accuracy = accuracy
    }
}

/// A trip's track as GPX 1.1 (what GPS tools open) and as CSV (what spreadsheets open).
public enum RouteFormats {
    /// GPX 1.1: one track, one segment, a `trkpt` per waypoint with `ele` and `time`, in the
    /// element order the schema requires. GPX 1.1 has no speed or course (1.0 had them); the
    /// CSV export carries those.
    public static func gpx(booking: BookingID, points: [RoutePoint]) -> String {
        let name = xmlEscaped(booking.rawValue)
        var xml = """
            <?xml version="1.0" encoding="UTF-8"?>
            <gpx version="1.1" creator="pgtrack" xmlns="http://www.topografix.com/GPX/1/1" \
            xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" \
            xsi:schemaLocation="http://www.topografix.com/GPX/1/1 http://www.topografix.com/GPX/1/1/gpx.xsd">
            <metadata><name>\(name)</name></metadata>
            <trk><name>\(name)</name><trkseg>

            """
        for point in points {
            xml += #"<trkpt lat="\#(coordinate(point.latitude))" lon="\#(coordinate(point.longitude))">"#
            if let altitude = point.altitude { xml += "<ele>\(decimal(altitude, places: 2))</ele>" }
            xml += "<time>\(isoTime(point.fixTime))</time></trkpt>\n"
        }
        return xml + "</trkseg></trk>\n</gpx>\n"
    }

    public static let csvHeader = "timestamp,latitude,longitude,speed,heading,altitude,accuracy"

    /// RFC 4180 CSV with a header row; empty fields for values a fix did not report.
    public static func csv(points: [RoutePoint]) -> String {
        var text = csvHeader + "\r\n"
        for point in points {
            let optional = [point.speed, point.heading, point.altitude, point.accuracy].map { $0.map { decimal($0, places: 3) } ?? "" }
            text += ([isoTime(point.fixTime), coordinate(point.latitude), coordinate(point.longitude)] + optional)
                .joined(separator: ",") + "\r\n"
        }
        return text
    }

    /// Six decimals (about 0.1 m), as RFC 7946 recommends.
    static func coordinate(_ value: Double) -> String { decimal(value, places: 6) }

    static func decimal(_ value: Double, places: Int) -> String {
        var text = String(format: "%.\(places)f", value)
        if text.contains(".") {
            while text.hasSuffix("0") { text.removeLast() }
            if text.hasSuffix(".") { text.removeLast() }
        }
        return text == "-0" ? "0" : text
    }

    /// ISO-8601 UTC with milliseconds, like every time the service emits.
    public static func isoTime(_ date: Date) -> String { Timestamp.format(date) }

    static func xmlEscaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// Where a page of waypoints ends: the (fix time, id) of its last point, as an opaque string
/// the client passes back as `cursor`.
public struct PointCursor: Sendable, Equatable {
    public let fixTimeMicros: Int64
    public let id: Int64

    public init(fixTimeMicros: Int64, id: Int64) {
        self.fixTimeMicros = fixTimeMicros
        self.id = id
    }

    public init?(_ text: String) {
        let parts = text.split(separator: "_")
        guard parts.count == 2, let time = Int64(parts[0]), let id = Int64(parts[1]), id > 0 else { return nil }
        self.init(fixTimeMicros: time, id: id)
    }

    public var text: String { "\(fixTimeMicros)_\(id)" }
}
