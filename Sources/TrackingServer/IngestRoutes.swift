import Foundation
import HTTPTypes
import Hummingbird
import NIOCore
import TrackingCore
import TrackingStore

/// Real device protocols (README "Device protocols"): Traccar position and event forwarding,
/// OsmAnd (Traccar Client), OwnTracks HTTP; and the tenant's fix filter settings. Decoding is
/// in TrackingCore; every fix goes through the same insert (trigger, filters, change log,
/// pushes) as `POST /api/v1/locations`.
///
/// Credentials: a device API key (`pgt_…`: posts for its own device only) or a tenant ingest
/// key (`pgi_…`: each fix names its device by unique id), sent as `X-API-Key`, as the password
/// of HTTP Basic auth (OwnTracks), or as `?api_key=` / `?key=` (apps that cannot set headers).
struct IngestRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let validator: PositionValidator

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/ingest/traccar", use: traccarPositions)
        router.post("/api/v1/ingest/traccar/events", use: traccarEvents)
        router.get("/api/v1/ingest/osmand", use: osmAnd)
        router.post("/api/v1/ingest/osmand", use: osmAnd)
        router.post("/api/v1/ingest/owntracks", use: ownTracks)
        router.get("/api/v1/settings/filters", use: filterSettings)
        router.put("/api/v1/settings/filters", use: updateFilterSettings)
    }

    @Sendable func traccarPositions(request: Request, context: AppRequestContext) async throws -> Response {
        let caller = try await ingestCaller(request).caller
        let body = try await request.collectBody(limit: ServerConfiguration.maxBodyBytes)
        let fixes = try TraccarProtocol.decodePositions(body.readableBytesView, validator: validator)
        return try encodedResponse(try await repository.ingest(fixes, as: caller))
    }

    @Sendable func traccarEvents(request: Request, context: AppRequestContext) async throws -> Response {
        let caller = try await ingestCaller(request).caller
        let body = try await request.collectBody(limit: 64 << 10)
        let event = try TraccarProtocol.decodeEvent(body.readableBytesView, validator: validator)
        let seq = try await repository.logDeviceEvent(event, as: caller)
        return jsonResponse(#"{"stored":true,"seq":\#(seq)}"#)
    }

    /// Query parameters (GET, or POST with them in the URL or a form body), or the JSON body of
    /// newer Traccar Client versions.
    @Sendable func osmAnd(request: Request, context: AppRequestContext) async throws -> Response {
        let caller = try await ingestCaller(request).caller
        let body = try await request.collectBody(limit: ServerConfiguration.maxBodyBytes)
        let bytes = body.readableBytesView
        let fixes: [ProtocolFix]
        if let first = bytes.first(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) {
            if first == UInt8(ascii: "{") || first == UInt8(ascii: "[") {
                fixes = try OsmAndProtocol.decodeJSON(bytes, validator: validator)
            } else {
                // application/x-www-form-urlencoded: the same keys as the query.
                let form = Self.formFields(String(decoding: bytes, as: UTF8.self))
                for (name, value) in form { try NULCharacter.check(name + value, field: name) }
                fixes = [try OsmAndProtocol.decodeQuery(parameters(request.uri.queryParameters) + form, validator: validator)]
            }
        } else {
            fixes = [try OsmAndProtocol.decodeQuery(parameters(request.uri.queryParameters), validator: validator)]
        }
        return try encodedResponse(try await repository.ingest(fixes, as: caller))
    }

    /// Answers `[]` (no messages for the phone), as the OwnTracks HTTP mode expects.
    @Sendable func ownTracks(request: Request, context: AppRequestContext) async throws -> Response {
        let (caller, user) = try await ingestCaller(request)
        let body = try await request.collectBody(limit: 64 << 10)
        var uniqueID: DeviceUniqueID?
        if let user = user ?? request.headers[.limitUser], !user.isEmpty {
            guard let parsed = DeviceUniqueID(user) else {
                throw APIError.invalid("The OwnTracks user names the device's unique id and must be \(DeviceUniqueID.rule).",
                                       field: "user", index: nil)
            }
            uniqueID = parsed
        }
        if let fix = try OwnTracksProtocol.decode(body.readableBytesView, uniqueID: uniqueID, validator: validator) {
            _ = try await repository.ingest([fix], as: caller)
        }
        return jsonResponse("[]")
    }

    // MARK: Filter settings

    @Sendable func filterSettings(request: Request, context: AppRequestContext) async throws -> Response {
        try await authenticator.readSettings(request, roles: [.admin, .dispatcher], what: "filter settings",
                                             load: repository.filterSettings(tenant:))
    }

    /// Replaces the settings; a field left out keeps its value, null turns a threshold off.
    @Sendable func updateFilterSettings(request: Request, context: AppRequestContext) async throws -> Response {
        let principal = try await authenticator.authenticate(request)
        _ = try principal.requireUser([.admin], to: "change filter settings")
        guard var settings = try await repository.filterSettings(tenant: principal.tenant) else {
            throw APIError.notFound("No tenant \(principal.tenant).")
        }
        let bytes = try await request.collectBody(limit: 16 << 10)
        guard case .object(let fields) = try JSONBody.decode(JSONValue.self, from: bytes.readableBytesView) else {
            throw APIError.badRequest("Send a JSON object of filter settings.", code: "malformed_json")
        }
        try FilterSettingsPatch.apply(fields, to: &settings)
        try await repository.updateFilterSettings(settings, tenant: principal.tenant)
        return try encodedResponse(try await repository.filterSettings(tenant: principal.tenant) ?? settings)
    }

    // MARK: Credentials

    /// The caller and, with HTTP Basic auth, its user name (OwnTracks names the device with it).
    private func ingestCaller(_ request: Request) async throws -> (caller: IngestCaller, user: String?) {
        var key: String?
        var user: String?
        if let header = request.headers[.apiKey] {
            key = header
        } else if let authorization = request.headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "basic",
                  let decoded = Data(base64Encoded: String(parts[1]).trimmingCharacters(in: .whitespaces)),
                  let text = String(data: decoded, encoding: .utf8), let colon = text.firstIndex(of: ":")
            else {
                throw APIError.unauthorized("Device protocols take the API key as HTTP Basic password, X-API-Key or ?api_key=.")
            }
            user = String(text[..<colon])
            key = String(text[text.index(after: colon)...])
        } else {
            let query = request.uri.queryParameters
            key = query.get("api_key") ?? query.get("key")
        }
        guard let key, !key.isEmpty else {
            throw APIError.unauthorized("Missing credentials: send the device or ingest key as X-API-Key, ?api_key= or the HTTP Basic password.")
        }
        if IngestAPIKey.looksValid(key) {
            guard let tenant = try await repository.authenticateIngestKey(key) else { throw APIError.unauthorized("Invalid ingest key.") }
            return (.tenant(tenant), user)
        }
        guard let device = try await repository.authenticateDevice(apiKey: key) else { throw APIError.unauthorized("Invalid API key.") }
        return (.device(device), user)
    }

    /// `a=1&b=x+y` as form encoding writes it ('+' is a space).
    static func formFields(_ text: String) -> [(String, String)] {
        text.split(separator: "&").map { pair in
            let parts = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            func decode(_ part: Substring) -> String {
                let spaced = part.replacingOccurrences(of: "+", with: " ")
                return spaced.removingPercentEncoding ?? spaced
            }
            return (decode(parts[0]), parts.count > 1 ? decode(parts[1]) : "")
        }
    }

    private func parameters(_ flat: some Sequence<(key: Substring, value: Substring)>) -> [(String, String)] {
        flat.map { (String($0.key), String($0.value)) }
    }
}

/// Applies a JSON object of filter settings onto the current ones, checking each value.
enum FilterSettingsPatch {
    static func apply(_ fields: [String: JSONValue], to settings: inout FilterSettings) throws(APIError) {
        func invalid(_ key: String, _ message: String) -> APIError { .invalid("\(key): \(message).", field: key, index: nil) }
        func bool(_ key: String) throws(APIError) -> Bool {
            guard case .bool(let value)? = fields[key] else { throw invalid(key, "must be true or false") }
            return value
        }
        func threshold(_ key: String, _ range: ClosedRange<Double>, _ unit: String) throws(APIError) -> Double? {
            switch fields[key] {
            case .null?: return nil
            case .number(let value)? where range.contains(value): return value
            default: throw invalid(key, "must be null (off) or \(unit) between \(range.lowerBound) and \(range.upperBound)")
            }
        }
        for key in fields.keys {
            switch key {
            case "mode":
                guard case .string(let mode)? = fields[key], mode == "flag" || mode == "drop" else {
                    throw invalid(key, "must be \"flag\" (store filtered fixes marked) or \"drop\" (do not store them)")
                }
                settings.mode = mode
            case "invalid": settings.invalid = try bool(key)
            case "zero": settings.zero = try bool(key)
            case "duplicate": settings.duplicate = try bool(key)
            case "future_seconds": settings.futureSeconds = try threshold(key, 0...86_400, "seconds")
            case "past_seconds": settings.pastSeconds = try threshold(key, 1...31_536_000, "seconds")
            case "accuracy_metres": settings.accuracyMetres = try threshold(key, 1...100_000, "metres")
            case "max_speed": settings.maxSpeed = try threshold(key, 1...1_000, "metres per second")
            case "min_period_seconds": settings.minPeriodSeconds = try threshold(key, 0.1...86_400, "seconds")
            case "jitter_metres": settings.jitterMetres = try threshold(key, 0.1...1_000, "metres")
            case "skip_limit_seconds": settings.skipLimitSeconds = try threshold(key, 1...86_400, "seconds")
            case "stationary_speed":
                guard let value = try threshold(key, 0...10, "metres per second") else { throw invalid(key, "must be a number") }
                settings.stationarySpeed = value
            default:
                throw invalid(key, "is not a filter setting (mode, invalid, zero, duplicate, future_seconds, past_seconds, "
                              + "accuracy_metres, max_speed, min_period_seconds, jitter_metres, stationary_speed, skip_limit_seconds)")
            }
        }
    }
}

extension HTTPField.Name {
    /// OwnTracks names its user in this header when it does not use HTTP Basic auth.
    static let limitUser = Self("X-Limit-U")!
}
