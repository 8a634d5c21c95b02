import Crypto
import Foundation

/// Device API keys: `pgt_` + 64 hex characters of randomness. Only the SHA-256 is stored, so a
/// stolen database does not hand out working keys. Lookup is by hash (a unique index), and the
/// stored hash is then compared in constant time.
public enum DeviceAPIKey {
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        let bytes = (0..<32).map { _ in UInt8.random(in: .min ... .max, using: &generator) }
        return "pgt_" + bytes.map { String(format: "%02x", $0) }.joined()
    }

    public static func hash(_ key: String) -> [UInt8] {
        Array(SHA256.hash(data: Data(key.utf8)))
    }

    /// Cheap shape check before touching the database.
    public static func looksValid(_ key: String) -> Bool {
        key.utf8.count == 68 && key.hasPrefix("pgt_")
            && key.utf8.dropFirst(4).allSatisfy { ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }
    }

    /// What a key list shows of a key: enough to tell keys apart, far too little to use one.
    public static func displayPrefix(_ key: String) -> String {
        String(key.prefix(10)) + "…"
    }

    /// Compares two digests without an early exit, so timing says nothing about where they differ.
    public static func constantTimeEqual(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        var difference: UInt8 = 0
        for index in a.indices { difference |= a[index] ^ b[index] }
        return difference == 0
    }
}
