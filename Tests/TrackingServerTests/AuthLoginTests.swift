import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("Auth: login", .timeLimit(.minutes(3)))
struct AuthLoginTests {
    static func loginJSON(tenant: String, email: String, password: String) -> String {
        #"{"tenant":"\#(tenant)","email":"\#(email)","password":"\#(password)"}"#
    }

    @Test("login answers a Bearer token pair and the user; the access token opens that user's profile")
    func loginSucceeds() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.dispatcher, in: acme.tenant)

            let reply = try await live.post("/api/v1/auth/login",
                                            json: Self.loginJSON(tenant: "acme", email: user.email, password: user.password))
            #expect(reply.status == 200, "\(reply.body)")
            let pair = try reply.object()
            #expect(pair["token_type"] as? String == "Bearer")
            #expect(pair["expires_in"] as? Int == 900, "the default access lifetime is 15 minutes: \(pair)")
            let access = try #require(pair["access_token"] as? String)
            let refresh = try #require(pair["refresh_token"] as? String)
            #expect(access.split(separator: ".", omittingEmptySubsequences: false).count == 3, "a JWT: \(access)")
            #expect(RefreshToken.looksValid(refresh), "\(refresh)")
            #expect(refresh != user.refreshToken, "every login opens its own refresh token")
            let shown = try #require(pair["user"] as? [String: Any])
            #expect(shown["user_id"] as? String == user.id.uuidString.lowercased())
            #expect(shown["tenant_id"] as? String == "acme")
            #expect(shown["email"] as? String == user.email)
            #expect(shown["role"] as? String == "dispatcher")
            #expect(!reply.body.contains(user.password) && !reply.body.contains("$2"), "no password or hash: \(reply.body)")

            let profile = try await live.get("/api/v1/auth/profile", bearer: access)
            #expect(profile.status == 200, "\(profile.body)")
            let me = try profile.object()
            #expect(me["user_id"] as? String == user.id.uuidString.lowercased())
            #expect(me["email"] as? String == user.email)
            #expect(me["role"] as? String == "dispatcher")
            #expect(me["tenant_id"] as? String == "acme")
            #expect(me["name"] as? String == "Dispatcher")
            #expect(!profile.body.contains("password") && !profile.body.contains("$2"), "\(profile.body)")

            let anonymous = try await live.get("/api/v1/auth/profile")
            ValidationTests.expectError(anonymous, status: 401, code: "unauthorized", "profile without a token")
        }
    }

    @Test("wrong password, unknown email, unknown or malformed tenant, another tenant's user: one identical 401")
    func failuresLookAlike() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let other = try await TestTenant.create(live.repository, id: "other")
            let user = try await live.user(.viewer, in: acme.tenant)
            let stranger = try await live.user(.viewer, in: other.tenant)

            let attempts: [(String, String)] = [
                ("wrong password", Self.loginJSON(tenant: "acme", email: user.email, password: "wrong horse battery")),
                ("password in the wrong case", Self.loginJSON(tenant: "acme", email: user.email, password: user.password.uppercased())),
                ("unknown email", Self.loginJSON(tenant: "acme", email: "nobody@example.com", password: user.password)),
                ("unknown tenant", Self.loginJSON(tenant: "ghost", email: user.email, password: user.password)),
                ("malformed tenant id", Self.loginJSON(tenant: "Not A Tenant!", email: user.email, password: user.password)),
                ("user of another tenant", Self.loginJSON(tenant: "acme", email: stranger.email, password: stranger.password)),
                ("right user, other tenant", Self.loginJSON(tenant: "other", email: user.email, password: user.password)),
                ("password too short", Self.loginJSON(tenant: "acme", email: user.email, password: "short")),
                ("password over 72 bytes", Self.loginJSON(tenant: "acme", email: user.email, password: user.password + String(repeating: "x", count: 80))),
                ("malformed email", Self.loginJSON(tenant: "acme", email: "not-an-email", password: user.password)),
            ]
            var bodies: Set<String> = []
            for (label, json) in attempts {
                let reply = try await live.post("/api/v1/auth/login", json: json)
                ValidationTests.expectError(reply, status: 401, code: "unauthorized", "\(label)")
                #expect(!reply.body.contains("access_token"), "\(label): \(reply.body)")
                bodies.insert(reply.body)
            }
            #expect(bodies.count == 1, "every failure must read the same, so tenants and emails cannot be probed: \(bodies)")
            let body = try #require(bodies.first)
            #expect(!body.contains(user.email) && !body.contains("ghost") && !body.contains("other"), "\(body)")

            // The same requests with every field right do log in: the 401s above were about the changed field.
            let good = try await live.post("/api/v1/auth/login",
                                           json: Self.loginJSON(tenant: "acme", email: user.email, password: user.password))
            #expect(good.status == 200, "\(good.body)")
            let goodOther = try await live.post("/api/v1/auth/login",
                                                json: Self.loginJSON(tenant: "other", email: stranger.email, password: stranger.password))
            #expect(goodOther.status == 200, "\(goodOther.body)")
        }
    }

    @Test("a body that is not JSON is 400; a missing or mistyped field is 422 naming it")
    func malformedBodies() async throws {
        try await LiveNode.run { live in
            _ = try await TestTenant.create(live.repository, id: "acme")
            let notJSON = try await live.post("/api/v1/auth/login", json: "tenant=acme&email=a@b.c")
            ValidationTests.expectError(notJSON, status: 400, code: "malformed_json", "form-encoded body")
            let array = try await live.post("/api/v1/auth/login", json: #"["acme","a@b.c","password"]"#)
            ValidationTests.expectError(array, status: 400, code: "malformed_json", "an array body")
            let empty = try await live.post("/api/v1/auth/login", json: "")
            ValidationTests.expectError(empty, status: 400, code: "malformed_json", "an empty body")

            let noPassword = try await live.post("/api/v1/auth/login", json: #"{"tenant":"acme","email":"a@example.com"}"#)
            ValidationTests.expectError(noPassword, status: 422, code: "validation_failed", field: "password", "missing password")
            let noTenant = try await live.post("/api/v1/auth/login", json: #"{"email":"a@example.com","password":"correct horse"}"#)
            ValidationTests.expectError(noTenant, status: 422, code: "validation_failed", field: "tenant", "missing tenant")
            let numberEmail = try await live.post("/api/v1/auth/login",
                                                  json: #"{"tenant":"acme","email":42,"password":"correct horse"}"#)
            ValidationTests.expectError(numberEmail, status: 422, code: "validation_failed", field: "email", "email is a number")
            let nullPassword = try await live.post("/api/v1/auth/login",
                                                   json: #"{"tenant":"acme","email":"a@example.com","password":null}"#)
            ValidationTests.expectError(nullPassword, status: 422, code: "validation_failed", field: "password", "null password")
        }
    }

    @Test("email is case-insensitive and trimmed at login and unique regardless of case; the password is not")
    func emailCase() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let admin = try await live.user(.admin, in: acme.tenant)
            let user = try await live.user(.viewer, in: acme.tenant, email: "Mixed.Case@Example.COM")
            #expect(user.record.email == "mixed.case@example.com", "stored lowercased")

            for spelling in ["mixed.case@example.com", "MIXED.CASE@EXAMPLE.COM", "  Mixed.Case@example.com "] {
                let reply = try await live.post("/api/v1/auth/login",
                                                json: Self.loginJSON(tenant: "acme", email: spelling, password: user.password))
                #expect(reply.status == 200, "\(spelling): \(reply.body)")
                let shown = try reply.object()["user"] as? [String: Any]
                #expect(shown?["user_id"] as? String == user.id.uuidString.lowercased(), "\(spelling)")
                #expect(shown?["email"] as? String == "mixed.case@example.com", "\(spelling)")
            }

            let duplicate = try await live.post(
                "/api/v1/auth/register", bearer: admin.accessToken,
                json: #"{"email":"MIXED.case@example.com","name":"Copy","password":"another password","role":"viewer"}"#)
            ValidationTests.expectError(duplicate, status: 409, code: "conflict", "the same email in another case")

            let wrongCase = try await live.post("/api/v1/auth/login",
                                                json: Self.loginJSON(tenant: "acme", email: user.email, password: "CORRECT HORSE BATTERY"))
            ValidationTests.expectError(wrongCase, status: 401, code: "unauthorized", "passwords are case-sensitive")
        }
    }
}
