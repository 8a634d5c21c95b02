import AsyncHTTPClient
import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Access tokens the server did not issue, or no longer honours. Each refusal is paired with a
/// token that differs only in the property under test and is accepted, so a 401 here is about
/// that property and not about a broken token builder.
@Suite("Auth: forged, expired and foreign access tokens", .timeLimit(.minutes(3)))
struct TokenForgeryTests {
    static func expectRefused(_ reply: LiveNode.Reply, _ comment: Comment, sourceLocation: SourceLocation = #_sourceLocation) {
        ValidationTests.expectError(reply, status: 401, code: "unauthorized", comment, sourceLocation: sourceLocation)
        #expect(!reply.body.contains("user_id"), "\(comment): \(reply.body)", sourceLocation: sourceLocation)
    }

    @Test("a server-issued token is refused once it has expired, with a message saying so")
    func expiredIssuedToken() async throws {
        try await LiveNode.run({ $0.accessTokenSeconds = 1 }) { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)
            try await Task.sleep(for: .milliseconds(2_500))
            let reply = try await live.get("/api/v1/auth/profile", bearer: user.accessToken)
            Self.expectRefused(reply, "a token 2.5 s past its 1 s lifetime")
            let message = try reply.error()["message"] as? String ?? ""
            #expect(message.contains("expired"), "\(reply.body)")
            // The refresh token still gets a new pair.
            let refreshed = try await AuthRefreshTests.refresh(live, user.refreshToken)
            #expect(refreshed.status == 200, "\(refreshed.body)")
        }
    }

    @Test("a token signed with the server's secret works; the same claims signed with another secret do not")
    func otherSecret() async throws {
        let secret = ForgedJWT.randomSecret()
        try await LiveNode.run({ $0.jwtSecret = secret }) { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.admin, in: acme.tenant)
            let claims = ForgedJWT.claims(for: user.record)

            let genuine = try await live.get("/api/v1/auth/profile", bearer: ForgedJWT.token(claims: claims, signature: .hs256(secret)))
            #expect(genuine.status == 200, "control: the hand-built token with the right secret: \(genuine.body)")

            for other in [ForgedJWT.randomSecret(), "", secret + "x", String(secret.dropLast())] {
                let forged = ForgedJWT.token(claims: claims, signature: .hs256(other))
                Self.expectRefused(try await live.get("/api/v1/auth/profile", bearer: forged), "signed with another secret")
                Self.expectRefused(try await live.get("/api/v1/users", bearer: forged), "an admin endpoint, another secret")
            }

            let expired = ForgedJWT.token(claims: ForgedJWT.claims(for: user.record, lifetime: -60), signature: .hs256(secret))
            let expiredReply = try await live.get("/api/v1/auth/profile", bearer: expired)
            Self.expectRefused(expiredReply, "right secret, exp a minute ago")
            #expect((try expiredReply.error()["message"] as? String)?.contains("expired") == true, "\(expiredReply.body)")

            // The server trusts the stored role, not the claim: a viewer's token that claims admin
            // (even correctly signed) is still a viewer.
            let viewer = try await live.user(.viewer, in: acme.tenant)
            let promoted = ForgedJWT.token(claims: ForgedJWT.claims(for: viewer.record, role: "admin"), signature: .hs256(secret))
            let listing = try await live.get("/api/v1/users", bearer: promoted)
            #expect(listing.status == 403, "the stored role (viewer) decides: \(listing.body)")
            #expect(try await live.get("/api/v1/auth/profile", bearer: promoted).object()["role"] as? String == "viewer")
        }
    }

    @Test("alg none and any algorithm but HS256 are refused, even with the right secret",
          arguments: ["none", "None", "NONE", "HS384", "HS512", "RS256", "missing"])
    func algorithms(alg: String) async throws {
        let secret = ForgedJWT.randomSecret()
        try await LiveNode.run({ $0.jwtSecret = secret }) { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.admin, in: acme.tenant)
            let claims = ForgedJWT.claims(for: user.record)
            let control = ForgedJWT.token(claims: claims, signature: .hs256(secret))
            #expect(try await live.get("/api/v1/auth/profile", bearer: control).status == 200, "control: HS256, right secret")

            let header: [String: Any] = alg == "missing" ? ["typ": "JWT"] : ["alg": alg, "typ": "JWT"]
            var tokens = [ForgedJWT.token(header: header, claims: claims, signature: .raw(""))]
            switch alg {
            case "HS384": tokens.append(ForgedJWT.token(header: header, claims: claims, signature: .hs384(secret)))
            case "HS512": tokens.append(ForgedJWT.token(header: header, claims: claims, signature: .hs512(secret)))
            default:
                // The HS256 signature of these very bytes, under a header that claims another algorithm.
                tokens.append(ForgedJWT.token(header: header, claims: claims, signature: .hs256(secret)))
            }
            for token in tokens {
                Self.expectRefused(try await live.get("/api/v1/auth/profile", bearer: token), "alg \(alg): \(token)")
                Self.expectRefused(try await live.post("/api/v1/auth/register", bearer: token,
                                                       json: #"{"email":"x@example.com","name":"X","password":"long enough","role":"admin"}"#),
                                   "alg \(alg) on register")
            }
            // An unsigned token with the header alg: HS256 is no better.
            Self.expectRefused(try await live.get("/api/v1/auth/profile", bearer: ForgedJWT.token(claims: claims, signature: .raw(""))),
                               "HS256 header, empty signature")
        }
    }

    @Test("a token naming another tenant, signed with a wrong secret, is refused there")
    func otherTenantWrongSecret() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let other = try await TestTenant.create(live.repository, id: "other")
            let attacker = try await live.user(.admin, in: acme.tenant)
            let victim = try await live.user(.admin, in: other.tenant)
            for claims in [ForgedJWT.claims(for: attacker.record, tenant: "other"), ForgedJWT.claims(for: victim.record)] {
                let forged = ForgedJWT.token(claims: claims, signature: .hs256(ForgedJWT.randomSecret()))
                Self.expectRefused(try await live.get("/api/v1/devices/\(other.device.id)", bearer: forged), "other's device")
                Self.expectRefused(try await live.get("/api/v1/users", bearer: forged), "other's users")
                Self.expectRefused(try await live.post("/api/v1/devices", bearer: forged, json: #"{"name":"planted"}"#), "create in other")
            }
            // The other tenant still has exactly its own device.
            let devices = try await live.get("/api/v1/devices", bearer: victim.accessToken)
            #expect(devices.status == 200, "\(devices.body)")
            #expect((try devices.object()["devices"] as? [[String: Any]])?.count == 1, "\(devices.body)")
        }
    }

    @Test("a genuine token of tenant A reaches none of tenant B's devices or users: 404 like an unknown id, and B is untouched")
    func validTokenOtherTenant() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let other = try await TestTenant.create(live.repository, id: "other", deviceName: "truck-9")
            let admin = try await live.user(.admin, in: acme.tenant)
            let otherAdmin = try await live.user(.admin, in: other.tenant)
            let otherViewer = try await live.user(.viewer, in: other.tenant)
            try await live.postPositions(Fixes.object(1), apiKey: acme.apiKey, expecting: 1)
            try await live.postPositions(Fixes.object(2), apiKey: other.apiKey, expecting: 1)
            let own = try await live.get("/api/v1/devices/\(acme.device.id)/position", bearer: admin.accessToken)
            #expect(own.status == 200, "control: A's own device: \(own.body)")

            let device = other.device.id.uuidString.lowercased()
            let user = otherViewer.id.uuidString.lowercased()
            let requests: [(HTTPMethod, String, String?, String)] = [
                (.GET, "/api/v1/devices/ID/position", nil, device), (.GET, "/api/v1/devices/ID", nil, device),
                (.GET, "/api/v1/devices/ID/keys", nil, device), (.POST, "/api/v1/devices/ID/keys", "{}", device),
                (.DELETE, "/api/v1/devices/ID/position", nil, device), (.POST, "/api/v1/devices/ID/purge", nil, device),
                (.DELETE, "/api/v1/devices/ID", nil, device), (.GET, "/api/v1/users/ID", nil, user),
                (.PUT, "/api/v1/users/ID/scope", #"{"groups":{"none":{"max_grade":0}}}"#, user), (.DELETE, "/api/v1/users/ID", nil, user),
            ]
            for (method, template, body, id) in requests {
                let random = UUID().uuidString.lowercased()
                let foreign = try await live.request(method, template.replacingOccurrences(of: "ID", with: id), bearer: admin.accessToken,
                                                     body: body.map { ByteBuffer(string: $0) })
                let unknown = try await live.request(method, template.replacingOccurrences(of: "ID", with: random), bearer: admin.accessToken,
                                                     body: body.map { ByteBuffer(string: $0) })
                ValidationTests.expectError(foreign, status: 404, code: "not_found", "\(method) \(template) with B's id")
                #expect(foreign.body.replacingOccurrences(of: id, with: "ID") == unknown.body.replacingOccurrences(of: random, with: "ID"),
                        "\(method) \(template): B's id must read like an unknown one")
                #expect(!foreign.body.contains("truck") && !foreign.body.contains("other"), "\(foreign.body)")
            }

            let devices = try await live.get("/api/v1/devices", bearer: admin.accessToken)
            // Compared in lowercase: the device list spells ids in uppercase (see the report), the rest in lowercase.
            let listed = devices.body.lowercased()
            #expect(devices.status == 200 && !listed.contains(device) && listed.contains(acme.device.id.uuidString.lowercased()),
                    "\(devices.body)")
            let users = try await live.get("/api/v1/users", bearer: admin.accessToken)
            #expect(users.status == 200 && !users.body.lowercased().contains(user) && !users.body.contains(otherAdmin.email), "\(users.body)")
            let snapshot = try await live.get("/api/v1/snapshot", bearer: admin.accessToken)
            #expect(snapshot.status == 200 && !snapshot.body.lowercased().contains(device), "\(snapshot.body)")
            #expect(snapshot.body.lowercased().contains(acme.device.id.uuidString.lowercased()), "control: A's own device: \(snapshot.body)")

            // B is as it was: marker, history, key, device and user all still there.
            let position = try await live.get("/api/v1/devices/\(device)/position", apiKey: other.apiKey)
            #expect(position.status == 200, "\(position.body)")
            #expect(try position.object().fixIndex == 2, "\(position.body)")
            let viewer = try await live.get("/api/v1/users/\(user)", bearer: otherAdmin.accessToken)
            #expect(viewer.status == 200, "\(viewer.body)")
            #expect(try viewer.object()["scope"] is NSNull, "the scope was not changed: \(viewer.body)")
            let keys = try await live.get("/api/v1/devices/\(device)/keys", bearer: otherAdmin.accessToken)
            #expect((try keys.object()["keys"] as? [[String: Any]])?.count == 1, "no key was added: \(keys.body)")
        }
    }

    @Test("Authorization schemes other than Bearer, and malformed Bearer values, are 401; the scheme is case-insensitive")
    func schemes() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)
            let basic = "Basic " + Data("\(user.email):\(user.password)".utf8).base64EncodedString()
            for value in [basic, "Bearer", "Bearer ", "Token \(user.accessToken)", user.accessToken, "Bearer abc.def.ghi",
                          "Bearer \(user.accessToken).x", "Bearer \(user.accessToken.dropLast(2))"] {
                let reply = try await live.request(.GET, "/api/v1/auth/profile", headers: [("Authorization", value)])
                Self.expectRefused(reply, "Authorization: \(value.prefix(30))")
            }
            for value in ["bearer \(user.accessToken)", "BEARER \(user.accessToken)"] {
                let reply = try await live.request(.GET, "/api/v1/auth/profile", headers: [("Authorization", value)])
                #expect(reply.status == 200, "\(value.prefix(10)): \(reply.body)")
            }
        }
    }

    @Test("query-string credentials open streams only, and are checked there like headers")
    func queryCredentials() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let user = try await live.user(.viewer, in: acme.tenant)
            Self.expectRefused(try await live.get("/api/v1/auth/profile?access_token=\(user.accessToken)"), "profile with ?access_token=")
            Self.expectRefused(try await live.get("/api/v1/devices?access_token=\(user.accessToken)"), "device list with ?access_token=")
            Self.expectRefused(try await live.post("/api/v1/locations?api_key=\(acme.apiKey)", json: Fixes.object(1)), "ingest with ?api_key=")

            let forged = ForgedJWT.token(claims: ForgedJWT.claims(for: user.record), signature: .hs256(ForgedJWT.randomSecret()))
            Self.expectRefused(try await live.get("/api/v1/stream?access_token=\(forged)"), "stream with a forged ?access_token=")
            Self.expectRefused(try await live.get("/api/v1/stream?api_key=pgt_\(String(repeating: "0", count: 64))"), "stream with an unknown ?api_key=")

            let stream = try await live.stream("/api/v1/stream?access_token=\(user.accessToken)")
            let first = try await stream.next("the snapshot of a stream opened with ?access_token=")
            #expect(first.event == "snapshot")
        }
    }
}
