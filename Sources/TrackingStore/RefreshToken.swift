import Crypto
import Foundation

/// Refresh tokens: `pgr_` + 64 hex characters of randomness, stored only as SHA-256.
public enum RefreshToken {
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return "pgr_" + bytes.map { String(format: "%02x", $0) }.joined()
    }

    public static func hash(_ token: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(token.utf8)))
    }

    public static func looksValid(_ token: String) -> Bool {
        token.utf8.count == 68 && token.hasPrefix("pgr_")
            && token.utf8.dropFirst(4).allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }
}
