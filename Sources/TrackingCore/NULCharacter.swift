import Foundation

/// PostgreSQL text and jsonb cannot hold U+0000 (SQLSTATE 22021 / 22P05, which answered 500),
/// so every text input is refused with 422 naming the field before it reaches the database.
/// JSON can only write the character as the escape `\u0000` (a raw NUL byte is not valid JSON),
/// so bodies without that escape skip the walk.
public enum NULCharacter {
    /// `field: must not contain …`, for a query parameter, form field or header.
    public static func rejection(field: String, index: Int? = nil) -> APIError {
        .invalid("\(field): must not contain the NUL character (U+0000).", field: field, index: index)
    }

    /// Refuses `text` when it holds U+0000.
    public static func check(_ text: some StringProtocol, field: String, index: Int? = nil) throws(APIError) {
        if text.utf8.contains(0) { throw rejection(field: field, index: index) }
    }

    /// Refuses a JSON body with U+0000 in any string or key, naming the first one's path
    /// (`stops[2].notes`; in a top-level array the element is `index`). A body that is not
    /// JSON passes: its own decoder says what is wrong with it.
    public static func checkJSON(_ bytes: some Collection<UInt8>) throws(APIError) {
        let data = Data(bytes)
        guard data.range(of: Data(#"\u0000"#.utf8)) != nil,
              let parsed = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]),
              let path = firstPath(in: parsed, at: [])
        else { return }
        var components = path[...]
        var index: Int?
        if case .index(let first) = components.first {
            index = first
            components = components.dropFirst()
        }
        let field = components.reduce(into: "") { text, component in
            switch component {
            case .key(let key): text += text.isEmpty ? key : "." + key
            case .index(let i): text += "[\(i)]"
            }
        }
        throw rejection(field: field.isEmpty ? "body" : field, index: index)
    }

    enum PathComponent {
        case key(String)
        case index(Int)
    }

    private static func firstPath(in value: Any, at path: [PathComponent]) -> [PathComponent]? {
        switch value {
        case let string as String:
            return string.utf8.contains(0) ? path : nil
        case let array as [Any]:
            for (i, element) in array.enumerated() {
                if let found = firstPath(in: element, at: path + [.index(i)]) { return found }
            }
            return nil
        case let object as [String: Any]:
            for key in object.keys.sorted() {
                let here = path + [.key(key.replacingOccurrences(of: "\u{0}", with: "\\u0000"))]
                if key.utf8.contains(0) { return here }
                if let found = firstPath(in: object[key]!, at: here) { return found }
            }
            return nil
        default:
            return nil
        }
    }
}
