import Foundation

/// The HS256 secret of access tokens: `JWT_SECRET`, or one generated once and kept in the local
/// data directory (mode 0600) so tokens survive restarts of a single node.
public enum JWTSecret {
    /// 32 random bytes as hex.
    public static func generate() -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<32).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max, using: &generator)) }.joined()
    }

    public struct TooShort: Error, CustomStringConvertible {
        public var description: String { "JWT_SECRET must be at least 32 characters; generate one with: openssl rand -hex 32" }
    }

    /// `environment` when set (at least 32 characters), else the secret stored in `file`,
    /// created on first use.
    public static func resolve(environment: String?, file: URL) throws -> (secret: String, source: String) {
        if let environment, !environment.isEmpty {
            guard environment.count >= 32 else { throw TooShort() }
            return (environment, "JWT_SECRET")
        }
        if let stored = try? String(contentsOf: file, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
           stored.count >= 32 {
            return (stored, file.path)
        }
        let secret = generate()
        try FileManager.default.createDirectory(at: file.deletingLastPathComponent(), withIntermediateDirectories: true)
        guard FileManager.default.createFile(atPath: file.path, contents: Data(secret.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: file.path])
        }
        return (secret, file.path)
    }
}
