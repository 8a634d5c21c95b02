import TrackingCore
import TrackingStore

/// Creates users: validates the input, hashes the password off the event loop, stores. Shared by
/// `POST /api/v1/auth/register` and `pgtrack admin create-user`.
public struct UserRegistration: Sendable {
    let repository: TrackingRepository
    let hasher: PasswordHasher

    public init(repository: TrackingRepository, bcryptCost: UInt8 = 12) {
        self.repository = repository
        self.hasher = PasswordHasher(cost: bcryptCost)
    }

    public func register(_ input: UserInput, tenant: TenantID) async throws -> UserRecord {
        let fields = try input.validated()
        let hash = try await hasher.hash(input.password)
        return try await repository.createUser(
            NewUser(email: fields.email, name: fields.name, role: fields.role, passwordHash: hash,
                    deviceID: input.deviceID, scope: fields.scope),
            tenant: tenant)
    }
}
