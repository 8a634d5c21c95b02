import Foundation
import Hummingbird
import NIOCore
import TrackingCore

extension Request {
    /// The body decoded as `T`; 413 over `limit` bytes, 400 when not JSON, 422 naming the bad field.
    func decodeJSON<T: Decodable>(_ type: T.Type, limit: Int = 64 << 10) async throws -> T {
        try JSONBody.decode(T.self, from: try await collectBody(limit: limit).readableBytesView)
    }

    /// Like `decodeJSON`, but an empty body (however it was framed: no body, Content-Length 0,
    /// or an empty chunked one) is nil.
    func decodeOptionalJSON<T: Decodable>(_ type: T.Type, limit: Int = 64 << 10) async throws -> T? {
        let bytes = try await collectBody(limit: limit)
        guard bytes.readableBytesView.contains(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) else { return nil }
        return try JSONBody.decode(T.self, from: bytes.readableBytesView)
    }

    func collectBody(limit: Int) async throws -> ByteBuffer {
        do {
            return try await body.collect(upTo: limit)
        } catch is NIOTooManyBytesError {
            throw APIError(status: 413, code: "payload_too_large", message: "The body is larger than \(limit) bytes.")
        }
    }

    /// A path parameter that must be a UUID; anything else is 404, like a missing resource.
    func uuidParameter(_ name: String, context: some RequestContext, resource: String) throws -> UUID {
        let text = context.parameters.get(name) ?? ""
        guard let id = UUID(uuidString: text) else {
            throw APIError.notFound("No \(resource) \(text.prefix(64)).")
        }
        return id
    }
}

/// Encodes a response body with the service's JSON conventions (snake_case keys from CodingKeys,
/// ISO-8601 times, sorted keys so output is stable).
func encodedResponse(_ value: some Encodable, status: HTTPResponse.Status = .ok) throws -> Response {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    encoder.dateEncodingStrategy = .custom { date, encoder in
        var container = encoder.singleValueContainer()
        try container.encode(Timestamp.format(date))
    }
    return jsonResponse(String(decoding: try encoder.encode(value), as: UTF8.self), status: status)
}
