import Foundation
import TrackingCore
import TrackingStore

/// A user as every endpoint shows one.
struct UserView: Encodable {
    let user: UserRecord

    enum CodingKeys: String, CodingKey {
        case id = "user_id", tenantID = "tenant_id", email, name, role, deviceID = "device_id", scope
        case scopeVersion = "scope_version", createdAt = "created_at"
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(user.id.uuidString.lowercased(), forKey: .id)
        try container.encode(user.tenant.rawValue, forKey: .tenantID)
        try container.encode(user.email, forKey: .email)
        try container.encode(user.name, forKey: .name)
        try container.encode(user.role.rawValue, forKey: .role)
        try container.encode(user.deviceID?.uuidString.lowercased(), forKey: .deviceID)
        try container.encode(user.scope?.json, forKey: .scope)
        try container.encode(user.scopeVersion, forKey: .scopeVersion)
        try container.encode(user.createdAt, forKey: .createdAt)
    }
}

/// What login and refresh answer.
struct TokenPair: Encodable {
    let accessToken: String
    let expiresIn: Int
    let refreshToken: String
    let user: UserView
    let tokenType = "Bearer"

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token", expiresIn = "expires_in", refreshToken = "refresh_token", user, tokenType = "token_type"
    }
}

/// Validated fields of a new user (register and `pgtrack admin create-user`).
public struct UserInput: Decodable, Sendable {
    public let email: String
    public let name: String
    public let password: String
    public let role: String
    public let deviceID: UUID?
    public let scope: JSONValue?

    enum CodingKeys: String, CodingKey { case email, name, password, role, deviceID = "device_id", scope }

    public init(email: String, name: String, password: String, role: String, deviceID: UUID? = nil, scope: JSONValue? = nil) {
        self.email = email
        self.name = name
        self.password = password
        self.role = role
        self.deviceID = deviceID
        self.scope = scope
    }

    /// Checks every field; the password is returned for hashing, the rest as a `NewUser` minus its hash.
    public func validated() throws(APIError) -> (email: String, name: String, role: Role, scope: VisibilityScope?) {
        let email = Self.normalizedEmail(self.email)
        guard let email else {
            throw APIError.invalid("email must look like name@example.com (at most 254 characters)", field: "email", index: nil)
        }
        let name = self.name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard (1...200).contains(name.count), !name.contains("\u{0}") else {
            throw APIError.invalid("name must be 1–200 characters", field: "name", index: nil)
        }
        guard PasswordHasher.lengthRule.contains(password.utf8.count) else {
            throw APIError.invalid("password must be 8–72 bytes", field: "password", index: nil)
        }
        guard let role = Role(rawValue: role) else {
            throw APIError.invalid("role must be one of \(Role.list)", field: "role", index: nil)
        }
        if deviceID != nil && role != .driver {
            throw APIError.invalid("only drivers have a device_id", field: "device_id", index: nil)
        }
        var visibility: VisibilityScope?
        if let scope, scope != .null { visibility = try VisibilityScope(json: scope) }
        return (email, name, role, visibility)
    }

    /// Lowercased, trimmed; nil unless it has one '@' with text on both sides and no spaces.
    public static func normalizedEmail(_ text: String) -> String? {
        let email = text.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
        let parts = email.split(separator: "@", omittingEmptySubsequences: false)
        guard (3...254).contains(email.utf8.count), parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty,
              !email.contains(where: { $0.isWhitespace || $0 == "\u{0}" }) else { return nil }
        return email
    }
}
