import Foundation
import JWTKit
import TrackingCore
import TrackingStore

/// The claims of an access token: who, in which tenant. Role and device are included for
/// clients to read; the server trusts only the users row (see `Authenticator`).
struct AccessClaims: JWTPayload {
    var sub: SubjectClaim
    var tid: String
    var role: String
    var dev: String?
    var iat: IssuedAtClaim
    var exp: ExpirationClaim

    func verify(using algorithm: some JWTAlgorithm) throws {
        try exp.verifyNotExpired()
    }
}

/// Signs and verifies access tokens (JWT HS256). Stateless: a token is valid until it expires
/// (15 minutes by default); refresh tokens are the revocable part.
public struct TokenService: Sendable {
    let keys: JWTKeyCollection
    public let accessLifetime: Duration
    public let refreshLifetime: Duration

    public init(secret: String, accessLifetime: Duration = .seconds(900), refreshLifetime: Duration = .seconds(30 * 86_400)) async {
        keys = JWTKeyCollection()
        await keys.add(hmac: HMACKey(from: secret), digestAlgorithm: .sha256)
        self.accessLifetime = accessLifetime
        self.refreshLifetime = refreshLifetime
    }

    func issue(for user: UserRecord) async throws -> String {
        let now = Date()
        let claims = AccessClaims(
            sub: .init(value: user.id.uuidString.lowercased()), tid: user.tenant.rawValue, role: user.role.rawValue,
            dev: user.deviceID?.uuidString.lowercased(), iat: .init(value: now),
            exp: .init(value: now.addingTimeInterval(Double(accessLifetime.components.seconds))))
        return try await keys.sign(claims)
    }

    /// The user a token names, or 401. Only HS256 is accepted: a token claiming `none` or any
    /// other algorithm is refused before its signature is looked at.
    func verify(_ token: String) async throws -> TokenSubject {
        guard Self.headerAlgorithm(of: token) == "HS256" else {
            throw APIError.unauthorized("Invalid access token: only HS256 tokens issued by this server are accepted.")
        }
        let claims: AccessClaims
        do {
            claims = try await keys.verify(token, as: AccessClaims.self)
        } catch let error as JWTError where error.errorType == .claimVerificationFailure {
            throw APIError.unauthorized("The access token has expired; get a new one from POST /api/v1/auth/refresh.")
        } catch {
            throw APIError.unauthorized("Invalid access token.")
        }
        guard let id = UUID(uuidString: claims.sub.value), let tenant = TenantID(claims.tid) else {
            throw APIError.unauthorized("Invalid access token.")
        }
        return TokenSubject(id: id, tenant: tenant)
    }

    static func headerAlgorithm(of token: String) -> String? {
        guard let header = token.split(separator: ".", omittingEmptySubsequences: false).first else { return nil }
        var base64 = header.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while base64.count % 4 != 0 { base64 += "=" }
        guard let data = Data(base64Encoded: base64),
              let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return nil }
        return object["alg"] as? String
    }
}
