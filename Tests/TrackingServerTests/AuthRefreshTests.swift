import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("Auth: refresh rotation, reuse detection and logout", .timeLimit(.minutes(3)))
struct AuthRefreshTests {
    /// POST /api/v1/auth/refresh with `token`.
    static func refresh(_ live: LiveNode, _ token: String) async throws -> LiveNode.Reply {
        try await live.post("/api/v1/auth/refresh", json: #"{"refresh_token":"\#(token)"}"#)
    }

    /// Refreshes and requires a new pair: (access, refresh).
    static func rotate(_ live: LiveNode, _ token: String, sourceLocation: SourceLocation = #_sourceLocation) async throws -> (String, String) {
        let reply = try await refresh(live, token)
        try #require(reply.status == 200, "refresh answered \(reply.status): \(reply.body)", sourceLocation: sourceLocation)
        let pair = try reply.object()
        let access = try #require(pair["access_token"] as? String, sourceLocation: sourceLocation)
        let next = try #require(pair["refresh_token"] as? String, sourceLocation: sourceLocation)
        return (access, next)
    }

    /// A second, independent login of `user`: (access, refresh).
    static func login(_ live: LiveNode, _ user: TestUser, tenant: String = "acme") async throws -> (String, String) {
        let reply = try await live.post("/api/v1/auth/login", json: AuthLoginTests.loginJSON(tenant: tenant, email: user.email, password: user.password))
        try #require(reply.status == 200, "\(reply.body)")
        let pair = try reply.object()
        return (try #require(pair["access_token"] as? String), try #require(pair["refresh_token"] as? String))
    }

    @Test("refresh rotates: the new pair works, names the same user, and the old refresh token is refused")
    func rotation() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)

            let reply = try await Self.refresh(live, user.refreshToken)
            #expect(reply.status == 200, "\(reply.body)")
            let pair = try reply.object()
            #expect(pair["token_type"] as? String == "Bearer")
            #expect((pair["user"] as? [String: Any])?["user_id"] as? String == user.id.uuidString.lowercased())
            let access = try #require(pair["access_token"] as? String)
            let next = try #require(pair["refresh_token"] as? String)
            #expect(RefreshToken.looksValid(next))
            #expect(next != user.refreshToken)

            let profile = try await live.get("/api/v1/auth/profile", bearer: access)
            #expect(profile.status == 200, "\(profile.body)")
            #expect(try profile.object()["user_id"] as? String == user.id.uuidString.lowercased())

            // The chain goes on from the newest token...
            let (_, third) = try await Self.rotate(live, next)
            #expect(third != next)
            // ...and the first one, already used, is refused.
            let old = try await Self.refresh(live, user.refreshToken)
            ValidationTests.expectError(old, status: 401, code: "unauthorized", "a used refresh token")
        }
    }

    @Test("reusing a rotated refresh token revokes the newest token of that login, but not the user's other logins")
    func reuseRevokesFamily() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.driver, in: acme.tenant, device: acme.device.id)
            let (_, otherLogin) = try await Self.login(live, user)

            let (_, second) = try await Self.rotate(live, user.refreshToken)
            let (_, newest) = try await Self.rotate(live, second)

            let replay = try await Self.refresh(live, user.refreshToken)
            ValidationTests.expectError(replay, status: 401, code: "unauthorized", "replaying the first token")
            let message = try replay.error()["message"] as? String ?? ""
            #expect(message.contains("already used"), "a replay is reported as reuse, not as an unknown token: \(replay.body)")

            let afterReuse = try await Self.refresh(live, newest)
            ValidationTests.expectError(afterReuse, status: 401, code: "unauthorized",
                                        "the newest token of a family whose ancestor was replayed")
            let replayAgain = try await Self.refresh(live, second)
            ValidationTests.expectError(replayAgain, status: 401, code: "unauthorized", "a middle token of the revoked family")

            // Another login of the same user is another family and keeps working.
            _ = try await Self.rotate(live, otherLogin)
        }
    }

    @Test("two concurrent uses of one refresh token: exactly one rotates, and the token it got is revoked too")
    func concurrentReuse() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)

            async let first = Self.refresh(live, user.refreshToken)
            async let second = Self.refresh(live, user.refreshToken)
            let replies = try await [first, second]
            #expect(replies.map(\.status).sorted() == [200, 401], "\(replies.map(\.body))")
            let winner = try require(replies.first { $0.status == 200 })
            let issued = try #require(try winner.object()["refresh_token"] as? String)
            let late = try await Self.refresh(live, issued)
            ValidationTests.expectError(late, status: 401, code: "unauthorized", "the token issued to the winner of a race with a replay")
        }
    }

    @Test("logout with a refresh token ends that login (all its rotations) only; someone else's token is refused")
    func logoutOneLogin() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.dispatcher, in: acme.tenant)
            let colleague = try await live.user(.dispatcher, in: acme.tenant)
            let (_, otherLogin) = try await Self.login(live, user)
            let (_, rotated) = try await Self.rotate(live, user.refreshToken)

            // Another user's token is not this user's to end.
            let foreign = try await live.post("/api/v1/auth/logout", bearer: user.accessToken,
                                              json: #"{"refresh_token":"\#(colleague.refreshToken)"}"#)
            ValidationTests.expectError(foreign, status: 422, code: "validation_failed", field: "refresh_token", "a colleague's token")
            let (_, colleagueNext) = try await Self.rotate(live, colleague.refreshToken)

            // The login's original token names the family: its rotated successor ends with it.
            let out = try await live.post("/api/v1/auth/logout", bearer: user.accessToken,
                                          json: #"{"refresh_token":"\#(user.refreshToken)"}"#)
            #expect(out.status == 200, "\(out.body)")
            #expect(try out.object()["logged_out"] as? Bool == true)
            let ended = try await Self.refresh(live, rotated)
            ValidationTests.expectError(ended, status: 401, code: "unauthorized", "the rotated token of the ended login")

            _ = try await Self.rotate(live, otherLogin)
            _ = try await Self.rotate(live, colleagueNext)

            let anonymous = try await live.post("/api/v1/auth/logout", json: #"{"refresh_token":"\#(otherLogin)"}"#)
            ValidationTests.expectError(anonymous, status: 401, code: "unauthorized", "logout without an access token")
        }
    }

    @Test("logout with a chunked body (no Content-Length) still ends only the named login")
    func logoutChunked() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)
            let (_, otherLogin) = try await Self.login(live, user)
            let out = try await live.requestChunked(.POST, "/api/v1/auth/logout", bearer: user.accessToken,
                                                    json: #"{"refresh_token":"\#(user.refreshToken)"}"#)
            #expect(out.status == 200, "\(out.body)")
            let ended = try await Self.refresh(live, user.refreshToken)
            ValidationTests.expectError(ended, status: 401, code: "unauthorized", "the login named in the chunked body")
            let other = try await Self.refresh(live, otherLogin)
            #expect(other.status == 200, "a login not named in the body must survive: \(other.body)")
        }
    }

    @Test("logout without a body ends every login of the user, and no one else's")
    func logoutEverywhere() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.admin, in: acme.tenant)
            let colleague = try await live.user(.admin, in: acme.tenant)
            let (_, secondLogin) = try await Self.login(live, user)
            let (_, secondRotated) = try await Self.rotate(live, secondLogin)

            let out = try await live.request(.POST, "/api/v1/auth/logout", bearer: user.accessToken)
            #expect(out.status == 200, "\(out.body)")
            #expect(try out.object()["logged_out"] as? Bool == true)

            let first = try await Self.refresh(live, user.refreshToken)
            ValidationTests.expectError(first, status: 401, code: "unauthorized", "the first login after logout-all")
            let second = try await Self.refresh(live, secondRotated)
            ValidationTests.expectError(second, status: 401, code: "unauthorized", "the rotated second login after logout-all")
            _ = try await Self.rotate(live, colleague.refreshToken)
            // Signing in again works.
            let (_, fresh) = try await Self.login(live, user)
            _ = try await Self.rotate(live, fresh)
        }
    }

    @Test("unknown, malformed and non-refresh tokens are 401; a missing field is 422")
    func garbage() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)
            let garbage = ["garbage", "", "pgr_" + String(repeating: "0", count: 64), "pgr_" + String(repeating: "A", count: 64),
                           user.accessToken, acme.apiKey, String(user.refreshToken.dropLast()), user.refreshToken + "0"]
            for token in garbage {
                let reply = try await Self.refresh(live, token)
                ValidationTests.expectError(reply, status: 401, code: "unauthorized", "refresh with \(token.prefix(20))…")
            }
            let missing = try await live.post("/api/v1/auth/refresh", json: "{}")
            ValidationTests.expectError(missing, status: 422, code: "validation_failed", field: "refresh_token", "no refresh_token")
            // None of that disturbed the real token.
            _ = try await Self.rotate(live, user.refreshToken)
        }
    }

    @Test("an expired refresh token is refused")
    func expired() async throws {
        // A lifetime of 0 days: every refresh token has expired by the time it is presented.
        try await LiveNode.run({ $0.refreshTokenDays = 0 }) { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)
            let reply = try await Self.refresh(live, user.refreshToken)
            ValidationTests.expectError(reply, status: 401, code: "unauthorized", "an expired refresh token")
            #expect(try reply.error()["message"] as? String == "Invalid or expired refresh token; sign in again.", "\(reply.body)")
        }
    }
}
