import Foundation
import HTTPTypes
import Hummingbird
import TrackingCore
import TrackingStore

/// Who an access token names: a user id in a tenant. Role, device and scope are read from the
/// users row on every request, so a deleted user or a changed role takes effect at once rather
/// than when the token expires.
struct TokenSubject: Sendable, Equatable {
    let id: UUID
    let tenant: TenantID
}

/// Who is calling: a device (by API key) or a user (by access token), as stored now.
enum Principal: Sendable {
    case device(DeviceIdentity)
    case user(UserRecord)

    var tenant: TenantID {
        switch self {
        case .device(let device): return device.tenant
        case .user(let user): return user.tenant
        }
    }

    /// The user, if the caller is one with one of `roles`; otherwise 403 (or 401 for a device).
    func requireUser(_ roles: Set<Role>, to action: String) throws -> UserRecord {
        guard case .user(let user) = self else {
            throw APIError.forbidden("A device API key cannot \(action); sign in as a user (Authorization: Bearer <token>).")
        }
        guard roles.contains(user.role) else {
            let allowed = Role.allCases.filter(roles.contains).map(\.rawValue).joined(separator: " or ")
            throw APIError.forbidden("Only \(allowed) users can \(action); you are \(user.role.rawValue).")
        }
        return user
    }
}

/// Finds the caller: `Authorization: Bearer <jwt>` for users, `X-API-Key` for devices. Streams
/// also accept `?access_token=` and `?api_key=`, because browsers' EventSource cannot set headers.
struct Authenticator: Sendable {
    let repository: TrackingRepository
    let tokens: TokenService

    func authenticate(_ request: Request, allowQueryCredentials: Bool = false) async throws -> Principal {
        if let authorization = request.headers[.authorization] {
            let parts = authorization.split(separator: " ", maxSplits: 1)
            guard parts.count == 2, parts[0].lowercased() == "bearer" else {
                throw APIError.unauthorized("The Authorization header must be 'Bearer <access token>'.")
            }
            return .user(try await user(String(parts[1]).trimmingCharacters(in: .whitespaces)))
        }
        if let key = request.headers[.apiKey] {
            return .device(try await device(key))
        }
        if allowQueryCredentials {
            if let token = request.uri.queryParameters.get("access_token") { return .user(try await user(token)) }
            if let key = request.uri.queryParameters.get("api_key") { return .device(try await device(key)) }
        }
        throw APIError.unauthorized(allowQueryCredentials
            ? "Missing credentials: send Authorization: Bearer <token> or X-API-Key (or ?access_token= / ?api_key= for EventSource)."
            : "Missing credentials: send Authorization: Bearer <token> (users) or X-API-Key (devices).")
    }

    private func user(_ token: String) async throws -> UserRecord {
        let subject = try await tokens.verify(token)
        guard let user = try await repository.user(subject.id, tenant: subject.tenant) else {
            throw APIError.unauthorized("This user no longer exists.")
        }
        return user
    }

    private func device(_ key: String) async throws -> DeviceIdentity {
        guard !key.isEmpty, let device = try await repository.authenticateDevice(apiKey: key) else {
            throw APIError.unauthorized("Invalid API key.")
        }
        return device
    }

    /// What `principal` may see.
    func visibility(of principal: Principal) -> StreamFilter {
        switch principal {
        case .device(let device): return .group(device.group)
        case .user(let user): return StreamFilter.forUser(role: user.role, scope: user.scope, device: user.deviceID)
        }
    }
}

extension HTTPField.Name {
    static let apiKey = Self("X-API-Key")!
}
