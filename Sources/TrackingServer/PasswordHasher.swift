import HummingbirdBcrypt
import NIOPosix

/// bcrypt, run on NIO's thread pool: a hash takes tens of milliseconds on purpose, and must not
/// stall an event loop that is serving streams.
struct PasswordHasher: Sendable {
    /// bcrypt cost (2^cost rounds): 12 in production, lower in tests.
    let cost: UInt8
    /// Checked against when the email is unknown, so response timing does not tell which exist.
    private let decoy: String

    /// Passwords are 8–72 bytes: bcrypt ignores everything after byte 72.
    static let lengthRule = 8...72

    init(cost: UInt8) {
        self.cost = cost
        decoy = Bcrypt.hash("pgtrack decoy password", cost: cost)
    }

    func hash(_ password: String) async throws -> String {
        let cost = self.cost
        return try await NIOThreadPool.singleton.runIfActive { Bcrypt.hash(password, cost: cost) }
    }

    func verify(_ password: String, hash: String) async throws -> Bool {
        try await NIOThreadPool.singleton.runIfActive { Bcrypt.verify(password, hash: hash) }
    }

    /// Spends the time of a real check, for an unknown email.
    func verifyDecoy(_ password: String) async throws {
        _ = try await verify(password, hash: decoy)
    }
}
