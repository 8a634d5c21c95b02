import Crypto
import Foundation

/// Bearer secrets the service hands out (device API keys, refresh tokens): a short prefix that
/// says what it is, then 64 hex characters (256 bits) of randomness. Only the SHA-256 is stored.
struct SecretToken: Sendable {
    let prefix: String

    func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return prefix + bytes.map { String(format: "%02x", $0) }.joined()
    }

    static func hash(_ token: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(token.utf8)))
    }

    /// Cheap shape check before touching the database.
    func looksValid(_ token: String) -> Bool {
        token.utf8.count == prefix.utf8.count + 64 && token.hasPrefix(prefix)
            && token.utf8.dropFirst(prefix.utf8.count).allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
