/// Device API keys: `pgt_` + 64 hex characters of randomness. Only the SHA-256 is stored, so a
/// stolen database does not hand out working keys. Lookup is by hash (a unique index), and the
/// stored hash is then compared in constant time.
public enum DeviceAPIKey {
    private static let format = SecretToken(prefix: "pgt_")

    public static func generate() -> String { format.generate() }
    public static func hash(_ key: String) -> [UInt8] { SecretToken.hash(key) }
    public static func looksValid(_ key: String) -> Bool { format.looksValid(key) }

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
