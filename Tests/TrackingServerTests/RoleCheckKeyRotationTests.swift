import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Device API keys managed by an admin: rotation with and without overlap, listing, revoking.
@Suite("Roles: device API key rotation", .timeLimit(.minutes(3)))
struct RoleCheckKeyRotationTests {
    /// POST /api/v1/locations with `key`; its status.
    static func post(_ live: LiveNode, key: String, fix: Int) async throws -> Int {
        try await live.post("/api/v1/locations", apiKey: key, json: Fixes.object(fix)).status
    }

    /// POST /api/v1/devices/{id}/keys; the new key and its id.
    static func newKey(_ live: LiveNode, device: UUID, admin: TestUser, body: String? = nil,
                       sourceLocation: SourceLocation = #_sourceLocation) async throws -> (key: String, id: String, reply: [String: Any]) {
        let reply = try await live.request(.POST, "/api/v1/devices/\(device)/keys", bearer: admin.accessToken,
                                           body: body.map { ByteBuffer(string: $0) })
        try #require(reply.status == 201, "\(reply.body)", sourceLocation: sourceLocation)
        let object = try reply.object()
        let key = try #require(object["api_key"] as? String, sourceLocation: sourceLocation)
        let id = try #require((object["key"] as? [String: Any])?["key_id"] as? String, sourceLocation: sourceLocation)
        return (key, id, object)
    }

    static func keys(_ live: LiveNode, device: UUID, admin: TestUser) async throws -> (list: [[String: Any]], body: String) {
        let reply = try await live.get("/api/v1/devices/\(device)/keys", bearer: admin.accessToken)
        try #require(reply.status == 200, "\(reply.body)")
        return (try #require(try reply.object()["keys"] as? [[String: Any]], "\(reply.body)"), reply.body)
    }

    /// A listed key without a revocation time (the field is left out, or null, while active).
    static func isActive(_ key: [String: Any]?) -> Bool {
        guard let key, key["key_id"] != nil else { return false }
        return key["revoked_at"] == nil || key["revoked_at"] is NSNull
    }

    @Test("a new key revokes the old ones by default: the old key is 401, the new one posts; the list shows only prefixes")
    func rotation() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let admin = try await live.user(.admin, in: acme.tenant)
            #expect(try await Self.post(live, key: acme.apiKey, fix: 1) == 202, "control: the first key works")

            let (key, keyID, reply) = try await Self.newKey(live, device: acme.device.id, admin: admin)
            #expect(DeviceAPIKey.looksValid(key) && key != acme.apiKey, "\(key)")
            #expect((reply["key"] as? [String: Any])?["prefix"] as? String == String(key.prefix(10)) + "…", "\(reply)")

            let old = try await live.post("/api/v1/locations", apiKey: acme.apiKey, json: Fixes.object(2))
            ValidationTests.expectError(old, status: 401, code: "unauthorized", "the rotated-out key")
            #expect(try await Self.post(live, key: key, fix: 3) == 202, "the new key")

            let (list, body) = try await Self.keys(live, device: acme.device.id, admin: admin)
            #expect(list.count == 2, "\(body)")
            #expect(list.first?["key_id"] as? String == keyID, "newest first: \(body)")
            #expect(Self.isActive(list.first), "the new key is active: \(body)")
            #expect(list.last?["revoked_at"] is String, "the old key is revoked: \(body)")
            check(list.allSatisfy { ($0["prefix"] as? String)?.count == 11 }, "\(body)")
            #expect(!body.contains(key) && !body.contains(acme.apiKey), "a key list never shows a key: \(body)")
            #expect(!body.contains(String(key.prefix(20))) && !body.contains("api_key") && !body.contains("hash"), "\(body)")

            let device = try await live.get("/api/v1/devices/\(acme.device.id)", bearer: admin.accessToken)
            #expect(try device.object()["active_keys"] as? Int == 1, "\(device.body)")

            let explicit = try await Self.newKey(live, device: acme.device.id, admin: admin, body: #"{"keep_existing":false}"#)
            #expect(try await Self.post(live, key: key, fix: 4) == 401, "keep_existing false revokes the previous key too")
            #expect(try await Self.post(live, key: explicit.key, fix: 5) == 202)
        }
    }

    @Test("keep_existing keeps both keys working until the old one is revoked by id")
    func overlapThenRevoke() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let admin = try await live.user(.admin, in: acme.tenant)
            let (firstList, _) = try await Self.keys(live, device: acme.device.id, admin: admin)
            let oldID = try #require(firstList.first?["key_id"] as? String)

            let (key, _, _) = try await Self.newKey(live, device: acme.device.id, admin: admin, body: #"{"keep_existing":true}"#)
            #expect(try await Self.post(live, key: acme.apiKey, fix: 1) == 202, "the old key still works during the overlap")
            #expect(try await Self.post(live, key: key, fix: 2) == 202, "and so does the new one")
            let (list, body) = try await Self.keys(live, device: acme.device.id, admin: admin)
            check(list.count == 2 && list.allSatisfy { Self.isActive($0) }, "\(body)")

            let revoked = try await live.delete("/api/v1/devices/\(acme.device.id)/keys/\(oldID)", bearer: admin.accessToken)
            #expect(revoked.status == 200, "\(revoked.body)")
            #expect(try revoked.object()["revoked"] as? Bool == true)
            #expect(try revoked.object()["was_active"] as? Bool == true, "\(revoked.body)")
            #expect(try await Self.post(live, key: acme.apiKey, fix: 3) == 401, "a revoked key")
            #expect(try await Self.post(live, key: key, fix: 4) == 202, "the other key is untouched")

            let again = try await live.delete("/api/v1/devices/\(acme.device.id)/keys/\(oldID)", bearer: admin.accessToken)
            #expect(again.status == 200, "\(again.body)")
            #expect(try again.object()["was_active"] as? Bool == false, "revoking twice: \(again.body)")
        }
    }

    @Test("keep_existing is honoured when the body comes chunked, without a Content-Length")
    func keepExistingChunked() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let admin = try await live.user(.admin, in: acme.tenant)
            let reply = try await live.requestChunked(.POST, "/api/v1/devices/\(acme.device.id)/keys", bearer: admin.accessToken,
                                                      json: #"{"keep_existing":true}"#)
            #expect(reply.status == 201, "\(reply.body)")
            let key = try #require(try reply.object()["api_key"] as? String)
            #expect(try await Self.post(live, key: key, fix: 1) == 202)
            #expect(try await Self.post(live, key: acme.apiKey, fix: 2) == 202, "keep_existing: the old key must still work")
        }
    }

    @Test("keys are managed per device and tenant: another device's key id, or an unknown one, is 404")
    func wrongDeviceOrKey() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let admin = try await live.user(.admin, in: acme.tenant)
            let (other, otherKey) = try await live.repository.createDevice(tenant: acme.tenant, name: "van-2", group: "default", grade: 0)
            let (otherList, _) = try await Self.keys(live, device: other.id, admin: admin)
            let otherKeyID = try #require(otherList.first?["key_id"] as? String)

            let crossed = try await live.delete("/api/v1/devices/\(acme.device.id)/keys/\(otherKeyID)", bearer: admin.accessToken)
            ValidationTests.expectError(crossed, status: 404, code: "not_found", "van-2's key through van-1's path")
            let unknown = try await live.delete("/api/v1/devices/\(acme.device.id)/keys/\(UUID())", bearer: admin.accessToken)
            ValidationTests.expectError(unknown, status: 404, code: "not_found", "an unknown key id")
            let unknownDevice = try await live.request(.POST, "/api/v1/devices/\(UUID())/keys", bearer: admin.accessToken)
            ValidationTests.expectError(unknownDevice, status: 404, code: "not_found", "a key for an unknown device")
            #expect(try await Self.post(live, key: otherKey, fix: 1) == 202, "van-2's key survived")
            #expect(try await Self.post(live, key: acme.apiKey, fix: 2) == 202, "van-1's key survived")

            // Rotating van-2's key leaves van-1's alone.
            let (rotated, _, _) = try await Self.newKey(live, device: other.id, admin: admin)
            #expect(try await Self.post(live, key: otherKey, fix: 3) == 401)
            #expect(try await Self.post(live, key: rotated, fix: 4) == 202)
            #expect(try await Self.post(live, key: acme.apiKey, fix: 5) == 202, "another device's rotation does not touch this one")
        }
    }
}
