import Foundation

/// The error every endpoint answers with: `{"error": {"code", "message", "field"?, "index"?, "current_status"?}}`.
/// `status` is the HTTP status code; the server maps it, Core stays free of HTTP types.
public struct APIError: Error, Sendable, Equatable, Encodable {
    public let status: Int
    public let code: String
    public let message: String
    /// The offending input field, for validation errors (`latitude`, `attributes.x`).
    public let field: String?
    /// Position of the offending element in an array body.
    public let index: Int?
    /// For a refused state change (409): the state it was refused from.
    public let currentStatus: String?
    /// For a retryable refusal (503): seconds the client should wait before retrying, sent as
    /// the `Retry-After` header.
    public let retryAfterSeconds: Int?

    public init(status: Int, code: String, message: String, field: String? = nil, index: Int? = nil, currentStatus: String? = nil,
                retryAfterSeconds: Int? = nil) {
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.index = index
        self.currentStatus = currentStatus
        self.retryAfterSeconds = retryAfterSeconds
    }

    public static func badRequest(_ message: String, code: String = "bad_request") -> APIError {
        APIError(status: 400, code: code, message: message)
    }
    public static func unauthorized(_ message: String) -> APIError {
        APIError(status: 401, code: "unauthorized", message: message)
    }
    public static func forbidden(_ message: String) -> APIError {
        APIError(status: 403, code: "forbidden", message: message)
    }
    public static func notFound(_ message: String) -> APIError {
        APIError(status: 404, code: "not_found", message: message)
    }
    public static func invalid(_ message: String, field: String?, index: Int?) -> APIError {
        APIError(status: 422, code: "validation_failed", message: message, field: field, index: index)
    }
    public static func conflict(_ message: String, currentStatus: String? = nil, index: Int? = nil) -> APIError {
        APIError(status: 409, code: "conflict", message: message, index: index, currentStatus: currentStatus)
    }
    public static func unavailable(_ message: String, retryAfterSeconds: Int? = nil) -> APIError {
        APIError(status: 503, code: "unavailable", message: message, retryAfterSeconds: retryAfterSeconds)
    }

    struct Envelope: Encodable { let error: APIError }

    enum CodingKeys: String, CodingKey { case code, message, field, index, currentStatus = "current_status" }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(code, forKey: .code)
        try container.encode(message, forKey: .message)
        try container.encodeIfPresent(field, forKey: .field)
        try container.encodeIfPresent(index, forKey: .index)
        try container.encodeIfPresent(currentStatus, forKey: .currentStatus)
    }

    /// The JSON body of this error.
    public var jsonBody: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        let data = (try? encoder.encode(Envelope(error: self))) ?? Data(#"{"error":{"code":"internal","message":"error"}}"#.utf8)
        return String(decoding: data, as: UTF8.self)
    }
}
