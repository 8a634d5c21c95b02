import Crypto
import Foundation
import TrackingStore

/// JWTs built by hand (base64url header and payload, HMAC signature), so tests can present
/// tokens the server never issued: another secret, another algorithm, `alg: none`, edited
/// claims. Signed with the server's own secret and honest claims, the same builder yields a
/// token the server must accept, which shows a refusal is about the one thing a test changed.
enum ForgedJWT {
    enum Signature {
        case hs256(String)
        case hs384(String)
        case hs512(String)
        /// The third segment as given (`""` for an unsigned token).
        case raw(String)
    }

    static func base64URL(_ data: some DataProtocol) -> String {
        Data(data).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-")
            .replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    static func json(_ object: [String: Any]) -> Data {
        // Only literal dictionaries of strings and numbers are passed in, so this cannot fail.
        (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])) ?? Data("{}".utf8)
    }

    static func token(header: [String: Any] = ["alg": "HS256", "typ": "JWT"], claims: [String: Any],
                      signature: Signature) -> String {
        let signingInput = base64URL(json(header)) + "." + base64URL(json(claims))
        let message = Data(signingInput.utf8)
        let third: String
        switch signature {
        case .hs256(let secret):
            third = base64URL(Data(HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))))
        case .hs384(let secret):
            third = base64URL(Data(HMAC<SHA384>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))))
        case .hs512(let secret):
            third = base64URL(Data(HMAC<SHA512>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))))
        case .raw(let text):
            third = text
        }
        return signingInput + "." + third
    }

    /// The claims the server puts in a user's access token, valid for `lifetime` seconds from now
    /// (negative: already expired). `tenant` and `role` override the user's own.
    static func claims(for user: UserRecord, tenant: String? = nil, role: String? = nil,
                       lifetime: TimeInterval = 600) -> [String: Any] {
        let now = Date().timeIntervalSince1970.rounded(.down)
        var claims: [String: Any] = [
            "sub": user.id.uuidString.lowercased(),
            "tid": tenant ?? user.tenant.rawValue,
            "role": role ?? user.role.rawValue,
            "iat": Int(now),
            "exp": Int(now + lifetime),
        ]
        if let device = user.deviceID { claims["dev"] = device.uuidString.lowercased() }
        return claims
    }

    /// A 64-hex-character secret, like the server generates.
    static func randomSecret() -> String {
        (0..<32).map { _ in String(format: "%02x", UInt8.random(in: .min ... .max)) }.joined()
    }
}
