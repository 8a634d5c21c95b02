import Foundation

/// Decodes a small JSON request body (login, register, scope…) into a type, mapping every
/// failure to a 400 (not JSON) or a 422 that names the field.
public enum JSONBody {
    public static func decode<T: Decodable>(_ type: T.Type, from bytes: some Collection<UInt8>) throws(APIError) -> T {
        guard bytes.contains(where: { !($0 == 0x20 || $0 == 0x0A || $0 == 0x0D || $0 == 0x09) }) else {
            throw .badRequest("The request body is empty: send a JSON object.", code: "malformed_json")
        }
        try NULCharacter.checkJSON(bytes)
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch let error as APIError {
            throw error
        } catch let DecodingError.keyNotFound(key, _) {
            throw .invalid("\(key.stringValue): is required.", field: key.stringValue, index: nil)
        } catch let DecodingError.typeMismatch(type, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            if field.isEmpty { throw .badRequest("The request body must be a JSON object.", code: "malformed_json") }
            let expected = type == String.self ? "a string" : (type == Int.self || type == Double.self) ? "a number" : "a value of type \(type)"
            throw .invalid("\(field): must be \(expected).", field: field, index: nil)
        } catch let DecodingError.valueNotFound(_, context) {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw .invalid("\(field): must not be null.", field: field, index: nil)
        } catch let DecodingError.dataCorrupted(context) where !context.codingPath.isEmpty {
            let field = context.codingPath.map(\.stringValue).joined(separator: ".")
            throw .invalid("\(field): is not a valid value.", field: field, index: nil)
        } catch {
            throw .badRequest("The request body is not valid JSON.", code: "malformed_json")
        }
    }
}
