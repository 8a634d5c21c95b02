import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// `/api/v1/auth/…`: login, refresh (rotation with reuse detection), logout, profile, register.
struct AuthRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator
    let tokens: TokenService
    let registration: UserRegistration

    func register(on router: Router<AppRequestContext>) {
        router.post("/api/v1/auth/login", use: login)
        router.post("/api/v1/auth/refresh", use: refresh)
        router.post("/api/v1/auth/logout", use: logout)
        router.get("/api/v1/auth/profile", use: profile)
        router.post("/api/v1/auth/register", use: registerUser)
    }

    struct LoginBody: Decodable {
        let email: String
        let password: String
        let tenant: String
    }

    struct RefreshBody: Decodable {
        let refreshToken: String
        enum CodingKeys: String, CodingKey { case refreshToken = "refresh_token" }
    }

    struct LogoutBody: Decodable {
        let refreshToken: String?
        enum CodingKeys: String, CodingKey { case refreshToken = "refresh_token" }
    }

    @Sendable func login(request: Request, context: AppRequestContext) async throws -> Response {
        let body = try await request.decodeJSON(LoginBody.self)
        // One answer for every failure, so a caller cannot probe tenants or emails.
        let rejection = APIError.unauthorized("Wrong tenant, email or password.")
        guard let tenant = TenantID(body.tenant), let email = UserInput.normalizedEmail(body.email),
              PasswordHasher.lengthRule.contains(body.password.utf8.count),
              let (user, hash) = try await repository.credentials(email: email, tenant: tenant)
        else {
            try await registration.hasher.verifyDecoy(body.password)
            throw rejection
        }
        guard try await registration.hasher.verify(body.password, hash: hash) else { throw rejection }
        return try await tokenPair(for: user, refreshToken: try await repository.issueRefreshToken(user: user, lifetime: tokens.refreshLifetime))
    }

    @Sendable func refresh(request: Request, context: AppRequestContext) async throws -> Response {
        let body = try await request.decodeJSON(RefreshBody.self)
        switch try await repository.rotateRefreshToken(body.refreshToken, lifetime: tokens.refreshLifetime) {
        case .rotated(let user, let next):
            return try await tokenPair(for: user, refreshToken: next)
        case .reused:
            context.logger.warning("refresh token reused; its family is revoked")
            throw APIError.unauthorized("This refresh token was already used, so every token of this login is revoked; sign in again.")
        case .invalid:
            throw APIError.unauthorized("Invalid or expired refresh token; sign in again.")
        }
    }

    /// With a refresh token: ends that login. Without: ends every login of the user.
    /// Access tokens already issued stay valid until they expire (at most 15 minutes).
    @Sendable func logout(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await authenticator.authenticate(request).requireUser(Set(Role.allCases), to: "log out")
        let token = try await request.decodeOptionalJSON(LogoutBody.self)?.refreshToken
        if let token {
            guard try await repository.revokeRefreshFamily(token, user: user) else {
                throw APIError.invalid("refresh_token is not a token of this user", field: "refresh_token", index: nil)
            }
        } else {
            try await repository.revokeAllRefreshTokens(user: user)
        }
        return jsonResponse(#"{"logged_out":true}"#)
    }

    @Sendable func profile(request: Request, context: AppRequestContext) async throws -> Response {
        let user = try await authenticator.authenticate(request).requireUser(Set(Role.allCases), to: "have a profile")
        return try encodedResponse(UserView(user: user))
    }

    @Sendable func registerUser(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "register users")
        let input = try await request.decodeJSON(UserInput.self)
        let user = try await registration.register(input, tenant: admin.tenant)
        return try encodedResponse(UserView(user: user), status: .created)
    }

    private func tokenPair(for user: UserRecord, refreshToken: String) async throws -> Response {
        let access = try await tokens.issue(for: user)
        return try encodedResponse(TokenPair(accessToken: access, expiresIn: Int(tokens.accessLifetime.components.seconds),
                                             refreshToken: refreshToken, user: UserView(user: user)))
    }
}
