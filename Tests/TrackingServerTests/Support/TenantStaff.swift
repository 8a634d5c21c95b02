import Foundation
import Testing
import TrackingCore
import TrackingTestSupport

/// One user of every role in tenant `acme` (the driver linked to the tenant's device), and one
/// driver without a device.
struct TenantStaff {
    let acme: TestTenant
    let admin: TestUser
    let dispatcher: TestUser
    let driver: TestUser
    let viewer: TestUser
    let idleDriver: TestUser

    static func create(_ live: LiveNode) async throws -> TenantStaff {
        let acme = try await TestTenant.create(live.repository, id: "acme")
        return TenantStaff(acme: acme,
                     admin: try await live.user(.admin, in: acme.tenant),
                     dispatcher: try await live.user(.dispatcher, in: acme.tenant),
                     driver: try await live.user(.driver, in: acme.tenant, device: acme.device.id),
                     viewer: try await live.user(.viewer, in: acme.tenant),
                     idleDriver: try await live.user(.driver, in: acme.tenant))
    }

    var nonAdmins: [(role: String, user: TestUser)] {
        [("dispatcher", dispatcher), ("driver", driver), ("viewer", viewer), ("driver", idleDriver)]
    }

    /// A 403 whose JSON error names the caller's role and the roles allowed.
    static func expectForbidden(_ reply: LiveNode.Reply, role: String, allowed: String, _ comment: Comment,
                                sourceLocation: SourceLocation = #_sourceLocation) {
        ValidationTests.expectError(reply, status: 403, code: "forbidden", comment, sourceLocation: sourceLocation)
        let message = (try? reply.error())?["message"] as? String ?? ""
        #expect(message.contains("you are \(role)") && message.contains("Only \(allowed) users"), "\(comment): \(message)",
                sourceLocation: sourceLocation)
    }

    /// A 403 telling a device that this needs a user.
    static func expectDeviceForbidden(_ reply: LiveNode.Reply, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) {
        ValidationTests.expectError(reply, status: 403, code: "forbidden", comment, sourceLocation: sourceLocation)
        let message = (try? reply.error())?["message"] as? String ?? ""
        #expect(message.contains("device API key"), "\(comment): \(message)", sourceLocation: sourceLocation)
    }
}
