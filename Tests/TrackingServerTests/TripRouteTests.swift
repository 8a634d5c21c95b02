import Foundation
#if canImport(FoundationXML)
import FoundationXML
#endif
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Reading a trip's track: GeoJSON (`?points=true`, `?simplify=`), GPX, CSV, and paged points.
@Suite("trips: route exports and paged points", .serialized, .timeLimit(.minutes(3)))
struct TripRouteTests {
    /// Two minutes along a curve at 8 m/s; every tenth fix reports an altitude.
    static func curve(base: Date) -> [TrackPoint] {
        var builder = TrackBuilder(start: base, seed: 5)
        builder.drive(120, turn: 0.6)
        var points = builder.finished()
        for index in points.indices where index % 10 == 0 { points[index].altitude = 34 + Double(index) / 10 }
        return points
    }

    static func json(_ reply: LiveNode.Reply, sourceLocation: SourceLocation = #_sourceLocation) throws -> [String: Any] {
        try #require(reply.status == 200, "\(reply.status) \(reply.body.prefix(300))", sourceLocation: sourceLocation)
        return try reply.object()
    }

    static func coordinates(_ feature: [String: Any]?) -> [[Double]] {
        ((feature?["geometry"] as? [String: Any])?["coordinates"] as? [[Double]]) ?? []
    }

    static func sixDecimals(_ value: Double) -> Bool {
        abs(value * 1e6 - (value * 1e6).rounded()) < 1e-6
    }

    static func rounded6(_ value: Double) -> Double { (value * 1e6).rounded() / 1e6 }

    @Test("GeoJSON: a FeatureCollection whose first feature is the LineString [lon, lat] with 6 decimals; points=true adds a Point per waypoint")
    func geoJSON() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let points = Self.curve(base: TripClock.base())
            #expect(try await TripAPI.accept(live, "geo-1", apiKey: setup.apiKey).status == 201)
            try await TripAPI.post(live, points, apiKey: setup.apiKey)

            let collection = try Self.json(try await live.get("/api/v1/tracking/geo-1/route", bearer: admin.accessToken))
            #expect(collection["type"] as? String == "FeatureCollection")
            let features = try #require(collection["features"] as? [[String: Any]])
            #expect(features.count == 1, "no Point features without points=true")
            let line = features.first
            #expect(line?["type"] as? String == "Feature")
            #expect((line?["geometry"] as? [String: Any])?["type"] as? String == "LineString")
            let coordinates = Self.coordinates(line)
            #expect(coordinates.count == points.count)
            check(coordinates.allSatisfy { $0.count == 2 })
            check(coordinates.first.map { $0[0] > 13 && $0[0] < 14 && $0[1] > 52 && $0[1] < 53 } == true,
                    "GeoJSON order is [longitude, latitude]: \(coordinates.first ?? [])")
            check(coordinates.allSatisfy { Self.sixDecimals($0[0]) && Self.sixDecimals($0[1]) }, "at most 6 decimals")
            check(!points.dropFirst().dropLast().allSatisfy { Self.sixDecimals($0.latitude) }, "the posted fixes have more than 6 decimals")
            for (coordinate, point) in zip(coordinates, points) {
                #expect(abs(coordinate[0] - Self.rounded6(point.longitude)) < 1e-9 && abs(coordinate[1] - Self.rounded6(point.latitude)) < 1e-9,
                        "\(coordinate) vs \(point.longitude), \(point.latitude)")
            }
            let properties = line?["properties"] as? [String: Any] ?? [:]
            #expect(properties["booking_id"] as? String == "geo-1")
            #expect(properties["device_id"] as? String == setup.device.id.uuidString.lowercased())
            #expect(properties["status"] as? String == "in_progress")
            #expect(properties["point_count"] as? Int == points.count)
            #expect(properties["line_point_count"] as? Int == points.count)
            #expect(isoDate(properties["start"]) == points.first?.time)
            #expect(isoDate(properties["end"]) == points.last?.time)

            let withPoints = try Self.json(try await live.get("/api/v1/tracking/geo-1/route?points=true", apiKey: setup.apiKey))
            let all = try #require(withPoints["features"] as? [[String: Any]])
            #expect(all.count == points.count + 1)
            #expect(Self.coordinates(all.first) == coordinates, "the LineString comes first, unchanged")
            for (feature, point) in zip(all.dropFirst(), points) {
                let geometry = feature["geometry"] as? [String: Any] ?? [:]
                #expect(feature["type"] as? String == "Feature")
                #expect(geometry["type"] as? String == "Point")
                let coordinate = geometry["coordinates"] as? [Double] ?? []
                #expect(coordinate.count == 2 && abs(coordinate[0] - Self.rounded6(point.longitude)) < 1e-9
                        && abs(coordinate[1] - Self.rounded6(point.latitude)) < 1e-9, "\(coordinate)")
                let properties = feature["properties"] as? [String: Any] ?? [:]
                #expect(isoDate(properties["timestamp"]) == point.time, "\(properties)")
                #expect(properties["speed"] as? Double == point.speed)
                #expect(properties["altitude"] as? Double == point.altitude)
            }
        }
    }

    @Test("GeoJSON simplify=20: fewer line points, same first and last coordinates; 0 changes nothing; bad parameters 422")
    func simplify() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let points = Self.curve(base: TripClock.base())
            #expect(try await TripAPI.accept(live, "geo-2", apiKey: setup.apiKey).status == 201)
            try await TripAPI.post(live, points, apiKey: setup.apiKey)
            let path = "/api/v1/tracking/geo-2/route"
            let full = Self.coordinates((try Self.json(try await live.get(path, apiKey: setup.apiKey))["features"] as? [[String: Any]])?.first)
            #expect(full.count == 120)

            let simplified = try Self.json(try await live.get(path + "?simplify=20", apiKey: setup.apiKey))
            let features = simplified["features"] as? [[String: Any]] ?? []
            let line = Self.coordinates(features.first)
            #expect(line.count >= 2 && line.count < full.count / 4, "120 fixes on a gentle curve simplify to a few: \(line.count)")
            #expect(line.first == full.first, "first coordinate kept: \(line.first ?? []) vs \(full.first ?? [])")
            #expect(line.last == full.last, "last coordinate kept: \(line.last ?? []) vs \(full.last ?? [])")
            check(line.allSatisfy { Self.sixDecimals($0[0]) && Self.sixDecimals($0[1]) })
            let properties = features.first?["properties"] as? [String: Any] ?? [:]
            #expect(properties["simplify_metres"] as? Double == 20)
            #expect(properties["line_point_count"] as? Int == line.count)
            #expect(properties["point_count"] as? Int == 120)

            // Simplifying the line keeps every waypoint feature.
            let both = try Self.json(try await live.get(path + "?simplify=20&points=true", apiKey: setup.apiKey))
            #expect((both["features"] as? [Any])?.count == 121)
            let unsimplified = Self.coordinates((try Self.json(try await live.get(path + "?simplify=0", apiKey: setup.apiKey))["features"]
                as? [[String: Any]])?.first)
            #expect(unsimplified == full)

            for query in ["simplify=-1", "simplify=abc", "simplify=20000", "simplify=nan"] {
                ValidationTests.expectError(try await live.get(path + "?" + query, apiKey: setup.apiKey), status: 422,
                                            code: "validation_failed", field: "simplify", "?\(query)")
            }
            ValidationTests.expectError(try await live.get(path + "?points=maybe", apiKey: setup.apiKey), status: 422,
                                        code: "validation_failed", field: "points", "?points=maybe")
            ValidationTests.expectError(try await live.get(path + "?format=kml", apiKey: setup.apiKey), status: 422,
                                        code: "validation_failed", field: "format", "?format=kml")
        }
    }

    @Test("GeoJSON of a trip with no fix and with one fix: a null LineString geometry, counts 0 and 1")
    func shortTracks() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            #expect(try await TripAPI.accept(live, "geo-3", apiKey: setup.apiKey).status == 201)
            let empty = try Self.json(try await live.get("/api/v1/tracking/geo-3/route?points=true", apiKey: setup.apiKey))
            #expect(empty["type"] as? String == "FeatureCollection")
            let emptyFeatures = empty["features"] as? [[String: Any]] ?? []
            #expect(emptyFeatures.count == 1, "\(empty)")
            #expect(emptyFeatures.first?["geometry"] is NSNull, "\(empty)")
            #expect((emptyFeatures.first?["properties"] as? [String: Any])?["point_count"] as? Int == 0)

            try await live.postPositions(Self.curve(base: TripClock.base())[0].json(), apiKey: setup.apiKey, expecting: 1)
            let one = try Self.json(try await live.get("/api/v1/tracking/geo-3/route?points=true", apiKey: setup.apiKey))
            let oneFeatures = one["features"] as? [[String: Any]] ?? []
            #expect(oneFeatures.count == 2, "\(one)")
            #expect(oneFeatures.first?["geometry"] is NSNull, "one fix makes no line: \(one)")
            #expect((oneFeatures.first?["properties"] as? [String: Any])?["point_count"] as? Int == 1)
            #expect((oneFeatures.last?["geometry"] as? [String: Any])?["type"] as? String == "Point")
            let gpx = try await live.get("/api/v1/tracking/geo-3/route?format=gpx", apiKey: setup.apiKey)
            #expect(gpx.status == 200)
            #expect(GPXReader(gpx.body).trackPoints.count == 1)
        }
    }

    @Test("GPX 1.1 parses with XMLParser (one trkpt per fix, in order, with time and ele); CSV has a header and one row per fix")
    func gpxAndCSV() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let viewer = try await live.user(.viewer, in: setup.tenant)
            let points = Self.curve(base: TripClock.base())
            #expect(try await TripAPI.accept(live, "gpx-1", apiKey: setup.apiKey).status == 201)
            try await TripAPI.post(live, points, apiKey: setup.apiKey)

            let gpxReply = try await live.get("/api/v1/tracking/gpx-1/route?format=gpx", bearer: viewer.accessToken)
            #expect(gpxReply.status == 200, "\(gpxReply.body.prefix(300))")
            let gpx = GPXReader(gpxReply.body)
            #expect(gpx.parsed, "the GPX is well-formed XML: \(gpx.error ?? "")")
            #expect(gpx.root == "gpx")
            #expect(gpx.rootAttributes["version"] == "1.1")
            #expect(gpx.rootAttributes["xmlns"] == "http://www.topografix.com/GPX/1/1"
                    || gpxReply.body.contains(#"xmlns="http://www.topografix.com/GPX/1/1""#), "\(gpx.rootAttributes)")
            #expect(gpx.trackPoints.count == points.count)
            #expect(gpx.trackNames == ["gpx-1"])
            for (trackPoint, point) in zip(gpx.trackPoints, points) {
                check(trackPoint.latitude.map { abs($0 - point.latitude) < 6e-7 } == true, "\(trackPoint) vs \(point.latitude)")
                check(trackPoint.longitude.map { abs($0 - point.longitude) < 6e-7 } == true, "\(trackPoint) vs \(point.longitude)")
                #expect(isoDate(trackPoint.time) == point.time, "\(trackPoint)")
                #expect(trackPoint.elevation.flatMap(Double.init) == point.altitude, "\(trackPoint)")
            }

            let csvReply = try await live.get("/api/v1/tracking/gpx-1/route?format=csv", apiKey: setup.apiKey)
            #expect(csvReply.status == 200)
            var lines = csvReply.body.components(separatedBy: "\r\n")
            #expect(lines.last == "", "every row ends with CRLF")
            lines.removeLast()
            #expect(lines.first == "timestamp,latitude,longitude,speed,heading,altitude,accuracy")
            let rows = lines.dropFirst().map { $0.components(separatedBy: ",") }
            #expect(rows.count == points.count)
            for (row, point) in zip(rows, points) {
                #expect(row.count == 7, "\(row)")
                guard row.count == 7 else { continue }
                #expect(isoDate(row[0]) == point.time)
                check(Double(row[1]).map { abs($0 - point.latitude) < 6e-7 } == true, "\(row)")
                check(Double(row[2]).map { abs($0 - point.longitude) < 6e-7 } == true, "\(row)")
                #expect(Double(row[3]) == point.speed)
                #expect(Double(row[5]) == point.altitude, "altitude \(row)")
                #expect(row[6] == "", "no accuracy reported: \(row)")
            }
        }
    }

    /// A phone that buffered a fix while offline uploads it after the delivery was confirmed,
    /// naming the booking. The trip takes it in, and its figures and its exported route
    /// describe the same fixes (README: "the figures always equal a recomputation").
    @Test("after completion, a fix naming the booking joins the trip: point_count and route/points/GPX agree")
    func figuresAndRouteAgreeAfterCompletion() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let points = Self.curve(base: TripClock.base())
            #expect(try await TripAPI.accept(live, "late-1", apiKey: setup.apiKey).status == 201)
            try await TripAPI.post(live, Array(points[0..<10]), apiKey: setup.apiKey)
            #expect(try await TripAPI.complete(live, "late-1", apiKey: setup.apiKey).status == 200)

            var buffered = points[4]
            buffered.time = buffered.time.addingTimeInterval(0.5)
            try await live.postPositions(buffered.json(booking: "late-1"), apiKey: setup.apiKey, expecting: 1)

            let trip = try await TripAPI.trip(live, "late-1", apiKey: setup.apiKey)
            let count = try #require(trip["point_count"] as? Int)
            #expect(count == 11, "the buffered fix is the trip's 11th point: \(trip)")
            #expect(trip["status"] as? String == "completed")
            let paged = try Self.json(try await live.get("/api/v1/tracking/late-1/points?limit=1000", apiKey: setup.apiKey))
            let route = try Self.json(try await live.get("/api/v1/tracking/late-1/route", apiKey: setup.apiKey))
            let routeCount = ((route["features"] as? [[String: Any]])?.first?["properties"] as? [String: Any])?["point_count"] as? Int
            let gpx = GPXReader(try await live.get("/api/v1/tracking/late-1/route?format=gpx", apiKey: setup.apiKey).body)
            #expect((paged["points"] as? [Any])?.count == count, "GET …/points lists \((paged["points"] as? [Any])?.count ?? -1) fixes, the trip counts \(count)")
            #expect(routeCount == count, "the GeoJSON's point_count \(routeCount ?? -1) vs the trip's \(count)")
            #expect(gpx.trackPoints.count == count, "the GPX has \(gpx.trackPoints.count) trkpt, the trip counts \(count)")
            check(isoDate(route["features"].flatMap { ($0 as? [[String: Any]])?.first?["properties"] as? [String: Any] }?["end"])
                    == isoDate(trip["last_fix_at"]), "the route ends where the trip's figures end")
        }
    }

    /// A producer that names the booking on fixes it sends before the accept: they are the
    /// trip's first points, and the trip still waits for a fix after the accept to start.
    @Test("fixes naming a booking before its accept are absorbed by the accept; figures and route agree")
    func fixesBeforeAccept() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let points = Self.curve(base: TripClock.base())
            try await live.postPositions(TrackPoint.array(Array(points[0..<3]), booking: "early-1"), apiKey: setup.apiKey, expecting: 3)
            #expect(try await TripAPI.accept(live, "early-1", apiKey: setup.apiKey).status == 201)
            var trip = try await TripAPI.trip(live, "early-1", apiKey: setup.apiKey)
            #expect(trip["point_count"] as? Int == 3 && trip["status"] as? String == "accepted", "\(trip)")

            try await TripAPI.post(live, Array(points[3..<6]), apiKey: setup.apiKey)
            trip = try await TripAPI.trip(live, "early-1", apiKey: setup.apiKey)
            #expect(trip["point_count"] as? Int == 6 && trip["status"] as? String == "in_progress", "\(trip)")
            let paged = try Self.json(try await live.get("/api/v1/tracking/early-1/points?limit=1000", apiKey: setup.apiKey))
            #expect((paged["points"] as? [Any])?.count == 6, "\(paged)")
        }
    }

    /// 23 fixes; 5, 6 and 7 share one fix time, so do 15 and 16.
    static func pagedPoints(base: Date) -> [TrackPoint] {
        (0..<23).map { k in
            let second = [6: 5, 7: 5, 16: 15][k] ?? k
            return TrackPoint(time: base.addingTimeInterval(Double(second)), latitude: 52.5 + Double(k) * 0.0001,
                              longitude: 13.4 + Double(k) * 0.0001, speed: Double(k), heading: nil)
        }
    }

    @Test("points: limit=7 pages walk every fix exactly once in track order (ties in time by arrival); from/to filter; bad input 422")
    func paging() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let base = TripClock.base()
            let points = Self.pagedPoints(base: base)
            #expect(try await TripAPI.accept(live, "page-1", apiKey: setup.apiKey).status == 201)
            // In two requests, the second one's fixes in between the first one's.
            try await live.postPositions(TrackPoint.array(points.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)),
                                         apiKey: setup.apiKey, expecting: 12)
            try await live.postPositions(TrackPoint.array(points.enumerated().filter { $0.offset % 2 == 1 }.map(\.element)),
                                         apiKey: setup.apiKey, expecting: 11)

            func page(_ query: String) async throws -> (points: [[String: Any]], next: String?) {
                let object = try Self.json(try await live.get("/api/v1/tracking/page-1/points?" + query, bearer: admin.accessToken))
                #expect(object["booking_id"] as? String == "page-1")
                return (object["points"] as? [[String: Any]] ?? [], object["next_cursor"] as? String)
            }
            func walk(_ query: String) async throws -> (latitudes: [Double], pages: [Int]) {
                var latitudes: [Double] = []
                var sizes: [Int] = []
                var cursor: String?
                repeat {
                    let suffix = cursor.map { "&cursor=" + $0 } ?? ""
                    let (items, next) = try await page(query + suffix)
                    latitudes += items.compactMap { $0["latitude"] as? Double }
                    sizes.append(items.count)
                    cursor = next
                    if sizes.count > 10 { break }
                } while cursor != nil
                return (latitudes, sizes)
            }

            // Track order: by fix time, ties in the order the fixes were stored.
            let order = points.enumerated().sorted { a, b in
                a.element.time != b.element.time ? a.element.time < b.element.time : (a.offset % 2, a.offset) < (b.offset % 2, b.offset)
            }.map(\.element)
            let (latitudes, sizes) = try await walk("limit=7")
            #expect(sizes == [7, 7, 7, 2], "\(sizes)")
            #expect(latitudes == order.map(\.latitude), "every fix once, in track order")
            #expect(Set(latitudes).count == 23)
            let whole = try await page("limit=1000")
            #expect(whole.next == nil)
            check(whole.points.compactMap { $0["latitude"] as? Double } == latitudes)
            let first = whole.points.first ?? [:]
            #expect(isoDate(first["timestamp"]) == base)
            #expect(first["longitude"] as? Double == 13.4)
            #expect(first["speed"] as? Double == 0)
            let exact = try await page("limit=23")
            #expect(exact.points.count == 23 && exact.next == nil, "a page that holds the rest has no next_cursor")

            // from inclusive, to exclusive: fix times 10…14 (15 and 16 are at the `to` time).
            let from = base.addingTimeInterval(10).iso8601
            let to = base.addingTimeInterval(15).iso8601
            let window = try await walk("limit=2&from=\(from)&to=\(to)")
            check(window.latitudes == order.filter { $0.time >= base.addingTimeInterval(10) && $0.time < base.addingTimeInterval(15) }
                .map(\.latitude))
            #expect(window.latitudes.count == 5)
            #expect(window.pages == [2, 2, 1])
            let tail = try await walk("limit=7&from=\(base.addingTimeInterval(5).iso8601)")
            #expect(tail.latitudes.count == 18, "fixes from second 5 on, including the three at second 5")

            for cursor in ["abc", "123", "1_0", "_1", "1_2_3", "x_1"] {
                ValidationTests.expectError(try await live.get("/api/v1/tracking/page-1/points?cursor=\(cursor)", bearer: admin.accessToken),
                                            status: 422, code: "validation_failed", field: "cursor", "cursor \(cursor)")
            }
            for (query, field) in [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("from=yesterday", "from"),
                                   ("to=2026-13-01T00:00:00Z", "to"), ("from=\(to)&to=\(from)", "to")] {
                ValidationTests.expectError(try await live.get("/api/v1/tracking/page-1/points?\(query)", bearer: admin.accessToken),
                                            status: 422, code: "validation_failed", field: field, "?\(query)")
            }
        }
    }
}

/// Reads a GPX document with Foundation's XMLParser.
final class GPXReader: NSObject, XMLParserDelegate {
    struct TrackPoint: CustomStringConvertible {
        var latitude: Double?
        var longitude: Double?
        var time: String?
        var elevation: String?
        var description: String { "trkpt(\(latitude ?? .nan), \(longitude ?? .nan), \(time ?? "-"), ele \(elevation ?? "-"))" }
    }

    private(set) var parsed = false
    private(set) var error: String?
    private(set) var root: String?
    private(set) var rootAttributes: [String: String] = [:]
    private(set) var trackPoints: [TrackPoint] = []
    private(set) var trackNames: [String] = []
    private var path: [String] = []
    private var text = ""

    init(_ document: String) {
        super.init()
        let parser = XMLParser(data: Data(document.utf8))
        parser.shouldProcessNamespaces = false
        parser.delegate = self
        parsed = parser.parse()
        if !parsed { error = parser.parserError.map { "\($0)" } ?? "unknown error" }
    }

    func parser(_ parser: XMLParser, didStartElement elementName: String, namespaceURI: String?, qualifiedName qName: String?,
                attributes attributeDict: [String: String] = [:]) {
        if path.isEmpty {
            root = elementName
            rootAttributes = attributeDict
        }
        path.append(elementName)
        text = ""
        if elementName == "trkpt" {
            trackPoints.append(TrackPoint(latitude: attributeDict["lat"].flatMap(Double.init), longitude: attributeDict["lon"].flatMap(Double.init)))
        }
    }

    func parser(_ parser: XMLParser, foundCharacters string: String) {
        text += string
    }

    func parser(_ parser: XMLParser, didEndElement elementName: String, namespaceURI: String?, qualifiedName qName: String?) {
        let parent = path.dropLast().last
        switch (elementName, parent) {
        case ("time", "trkpt"): trackPoints[trackPoints.count - 1].time = text
        case ("ele", "trkpt"): trackPoints[trackPoints.count - 1].elevation = text
        case ("name", "trk"): trackNames.append(text)
        default: break
        }
        path.removeLast()
        text = ""
    }
}
