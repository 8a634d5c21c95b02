import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Access tokens stay valid until they expire, but their user may be deleted before that.
@Suite("Auth: tokens of deleted users", .timeLimit(.minutes(3)))
struct TokenForgeryDeletedUserTests {
    @Test("a validly signed token of a deleted user is 401 where the user is looked up, and its refresh token is dead")
    func deletedUser() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let admin = try await live.user(.admin, in: acme.tenant)
            let gone = try await live.user(.viewer, in: acme.tenant)
            #expect(try await live.get("/api/v1/auth/profile", bearer: gone.accessToken).status == 200, "control: before deletion")

            let deleted = try await live.delete("/api/v1/users/\(gone.id)", bearer: admin.accessToken)
            #expect(deleted.status == 200, "\(deleted.body)")

            let profile = try await live.get("/api/v1/auth/profile", bearer: gone.accessToken)
            TokenForgeryTests.expectRefused(profile, "profile of a deleted user")
            #expect((try profile.error()["message"] as? String)?.contains("no longer exists") == true, "\(profile.body)")
            TokenForgeryTests.expectRefused(try await live.get("/api/v1/devices", bearer: gone.accessToken), "device list of a deleted user")
            TokenForgeryTests.expectRefused(try await live.get("/api/v1/devices/\(acme.device.id)/position", bearer: gone.accessToken),
                               "a position, as a deleted user")
            TokenForgeryTests.expectRefused(try await live.get("/api/v1/snapshot", bearer: gone.accessToken), "snapshot of a deleted user")
            TokenForgeryTests.expectRefused(try await live.get("/api/v1/stream", bearer: gone.accessToken), "stream of a deleted user")
            TokenForgeryTests.expectRefused(try await live.request(.POST, "/api/v1/auth/logout", bearer: gone.accessToken), "logout of a deleted user")
            TokenForgeryTests.expectRefused(try await AuthRefreshTests.refresh(live, gone.refreshToken), "refresh of a deleted user")
            let login = try await live.post("/api/v1/auth/login",
                                            json: AuthLoginTests.loginJSON(tenant: "acme", email: gone.email, password: gone.password))
            TokenForgeryTests.expectRefused(login, "login of a deleted user")
        }
    }

    @Test("a deleted admin's token no longer administers: no registering, no devices, no deleting the last admin")
    func deletedAdmin() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let gone = try await live.user(.admin, in: acme.tenant)
            let remaining = try await live.user(.admin, in: acme.tenant)
            let deleted = try await live.delete("/api/v1/users/\(gone.id)", bearer: remaining.accessToken)
            #expect(deleted.status == 200, "\(deleted.body)")

            let register = try await live.post("/api/v1/auth/register", bearer: gone.accessToken,
                                               json: #"{"email":"planted@example.com","name":"Planted","password":"long enough","role":"admin"}"#)
            #expect(register.status == 401, "a deleted admin registers an admin: \(register.body)")
            let device = try await live.post("/api/v1/devices", bearer: gone.accessToken, json: #"{"name":"planted"}"#)
            #expect(device.status == 401, "a deleted admin creates a device: \(device.body)")
            let coup = try await live.delete("/api/v1/users/\(remaining.id)", bearer: gone.accessToken)
            #expect(coup.status == 401, "a deleted admin deletes the remaining admin: \(coup.body)")
            let profile = try await live.get("/api/v1/auth/profile", bearer: remaining.accessToken)
            #expect(profile.status == 200, "the remaining admin still exists: \(profile.body)")
        }
    }
}
