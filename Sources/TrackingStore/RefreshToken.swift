/// Refresh tokens: `pgr_` + 64 hex characters, stored only as SHA-256.
public enum RefreshToken {
    private static let format = SecretToken(prefix: "pgr_")

    public static func generate() -> String { format.generate() }
    public static func hash(_ token: String) -> [UInt8] { SecretToken.hash(token) }
    public static func looksValid(_ token: String) -> Bool { format.looksValid(token) }
}
