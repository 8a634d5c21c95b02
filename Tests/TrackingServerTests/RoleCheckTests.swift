import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("Roles: who may do what", .timeLimit(.minutes(3)))
struct RoleCheckTests {
    @Test("only an admin registers users, and only into the admin's own tenant")
    func register() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            _ = try await TestTenant.create(live.repository, id: "other")
            func body(_ email: String) -> String {
                #"{"email":"\#(email)","name":"New","password":"long enough pw","role":"admin","tenant":"other"}"#
            }
            for (index, (role, user)) in staff.nonAdmins.enumerated() {
                let reply = try await live.post("/api/v1/auth/register", bearer: user.accessToken, json: body("n\(index)@example.com"))
                TenantStaff.expectForbidden(reply, role: role, allowed: "admin", "\(role) registering")
            }
            let byDevice = try await live.post("/api/v1/auth/register", apiKey: staff.acme.apiKey, json: body("d@example.com"))
            TenantStaff.expectDeviceForbidden(byDevice, "a device registering")
            let users = try await live.get("/api/v1/users", bearer: staff.admin.accessToken)
            #expect((try users.object()["users"] as? [[String: Any]])?.count == 5, "nobody was created: \(users.body)")

            // The admin's registration lands in acme whatever the body says.
            let created = try await live.post("/api/v1/auth/register", bearer: staff.admin.accessToken, json: body("n0@example.com"))
            #expect(created.status == 201, "\(created.body)")
            #expect(try created.object()["tenant_id"] as? String == "acme", "\(created.body)")
            #expect(try created.object()["role"] as? String == "admin")
            let inAcme = try await live.post("/api/v1/auth/login",
                                             json: AuthLoginTests.loginJSON(tenant: "acme", email: "n0@example.com", password: "long enough pw"))
            #expect(inAcme.status == 200, "\(inAcme.body)")
            let inOther = try await live.post("/api/v1/auth/login",
                                              json: AuthLoginTests.loginJSON(tenant: "other", email: "n0@example.com", password: "long enough pw"))
            #expect(inOther.status == 401, "\(inOther.body)")
        }
    }

    @Test("listing, reading, scoping and deleting users is for admins; a device key is 403 there")
    func users() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let target = staff.viewer.id.uuidString.lowercased()
            let scope = #"{"groups":{"vans":{"max_grade":3}}}"#
            for (role, user) in staff.nonAdmins {
                TenantStaff.expectForbidden(try await live.get("/api/v1/users", bearer: user.accessToken), role: role, allowed: "admin", "\(role) lists")
                TenantStaff.expectForbidden(try await live.get("/api/v1/users/\(target)", bearer: user.accessToken), role: role, allowed: "admin",
                                      "\(role) reads a user")
                TenantStaff.expectForbidden(try await live.put("/api/v1/users/\(target)/scope", bearer: user.accessToken, json: scope),
                                      role: role, allowed: "admin", "\(role) sets a scope")
                TenantStaff.expectForbidden(try await live.delete("/api/v1/users/\(target)", bearer: user.accessToken), role: role,
                                      allowed: "admin", "\(role) deletes a user")
            }
            TenantStaff.expectDeviceForbidden(try await live.get("/api/v1/users", apiKey: staff.acme.apiKey), "a device lists users")
            TenantStaff.expectDeviceForbidden(try await live.get("/api/v1/users/\(target)", apiKey: staff.acme.apiKey), "a device reads a user")
            TenantStaff.expectDeviceForbidden(try await live.delete("/api/v1/users/\(target)", apiKey: staff.acme.apiKey), "a device deletes")

            // Nothing changed; then the admin does each of these.
            let before = try await live.get("/api/v1/users/\(target)", bearer: staff.admin.accessToken)
            #expect(before.status == 200, "\(before.body)")
            #expect(try before.object()["scope"] is NSNull, "\(before.body)")
            let list = try await live.get("/api/v1/users", bearer: staff.admin.accessToken)
            #expect((try list.object()["users"] as? [[String: Any]])?.count == 5, "\(list.body)")
            let scoped = try await live.put("/api/v1/users/\(target)/scope", bearer: staff.admin.accessToken, json: scope)
            #expect(scoped.status == 200, "\(scoped.body)")
            #expect(((try scoped.object()["scope"] as? [String: Any])?["groups"] as? [String: Any])?["vans"] != nil, "\(scoped.body)")
            let deleted = try await live.delete("/api/v1/users/\(target)", bearer: staff.admin.accessToken)
            #expect(deleted.status == 200, "\(deleted.body)")
            let after = try await live.get("/api/v1/users/\(target)", bearer: staff.admin.accessToken)
            #expect(after.status == 404, "\(after.body)")
        }
    }

    @Test("creating devices, managing keys, purging and deleting devices is for admins")
    func deviceManagement() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let device = staff.acme.device.id.uuidString.lowercased()
            try await live.postPositions(Fixes.object(1), apiKey: staff.acme.apiKey, expecting: 1)
            let keys = try await live.get("/api/v1/devices/\(device)/keys", bearer: staff.admin.accessToken)
            let keyID = try #require((try keys.object()["keys"] as? [[String: Any]])?.first?["key_id"] as? String, "\(keys.body)")

            let attempts: [(HTTPMethod, String, String?)] = [
                (.POST, "/api/v1/devices", #"{"name":"van-2"}"#), (.GET, "/api/v1/devices/\(device)/keys", nil),
                (.POST, "/api/v1/devices/\(device)/keys", nil), (.DELETE, "/api/v1/devices/\(device)/keys/\(keyID)", nil),
                (.POST, "/api/v1/devices/\(device)/purge", nil), (.DELETE, "/api/v1/devices/\(device)", nil),
            ]
            for (method, path, body) in attempts {
                for (role, user) in staff.nonAdmins {
                    let reply = try await live.request(method, path, bearer: user.accessToken, body: body.map { ByteBuffer(string: $0) })
                    TenantStaff.expectForbidden(reply, role: role, allowed: "admin", "\(role): \(method) \(path)")
                }
                let byDevice = try await live.request(method, path, apiKey: staff.acme.apiKey, body: body.map { ByteBuffer(string: $0) })
                TenantStaff.expectDeviceForbidden(byDevice, "device key: \(method) \(path)")
            }

            // None of it happened: the key still works, the marker is there, there is one device.
            try await live.postPositions(Fixes.object(2), apiKey: staff.acme.apiKey, expecting: 1)
            let position = try await live.get("/api/v1/devices/\(device)/position", apiKey: staff.acme.apiKey)
            #expect(position.status == 200, "\(position.body)")
            #expect(try await ValidationTests.positionCount(live.databaseURL) == 2)
            let devices = try await live.get("/api/v1/devices", bearer: staff.admin.accessToken)
            #expect((try devices.object()["devices"] as? [[String: Any]])?.count == 1, "\(devices.body)")

            // The admin may.
            let created = try await live.post("/api/v1/devices", bearer: staff.admin.accessToken, json: #"{"name":"van-2","group":"vans"}"#)
            #expect(created.status == 201, "\(created.body)")
            let newKey = try #require(try created.object()["api_key"] as? String, "\(created.body)")
            let newID = try #require((try created.object()["device"] as? [String: Any])?["device_id"] as? String)
            try await live.postPositions(Fixes.object(3), apiKey: newKey, expecting: 1)
            let purged = try await live.request(.POST, "/api/v1/devices/\(device)/purge", bearer: staff.admin.accessToken)
            #expect(purged.status == 200 && purged.body.contains(#""positions_deleted":2"#), "\(purged.body)")
            let removed = try await live.delete("/api/v1/devices/\(newID)", bearer: staff.admin.accessToken)
            #expect(removed.status == 200, "\(removed.body)")
            let gone = try await live.post("/api/v1/locations", apiKey: newKey, json: Fixes.object(4))
            #expect(gone.status == 401, "a deleted device's key: \(gone.body)")
        }
    }

    @Test("admins and dispatchers remove a marker; drivers, viewers and devices get 403 and the marker stays")
    func removeMarker() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let path = "/api/v1/devices/\(staff.acme.device.id)/position"
            try await live.postPositions(Fixes.object(1), apiKey: staff.acme.apiKey, expecting: 1)
            for (role, user) in [("driver", staff.driver), ("viewer", staff.viewer), ("driver", staff.idleDriver)] {
                TenantStaff.expectForbidden(try await live.delete(path, bearer: user.accessToken), role: role, allowed: "admin or dispatcher",
                                      "\(role) removes a marker")
            }
            TenantStaff.expectDeviceForbidden(try await live.delete(path, apiKey: staff.acme.apiKey), "a device removes its marker")
            #expect(try await live.get(path, apiKey: staff.acme.apiKey).status == 200, "the marker is still there")

            for (n, user) in [staff.admin, staff.dispatcher].enumerated() {
                if n > 0 { try await live.postPositions(Fixes.object(1 + n), apiKey: staff.acme.apiKey, expecting: 1) }
                let reply = try await live.delete(path, bearer: user.accessToken)
                #expect(reply.status == 200, "\(user.record.role): \(reply.body)")
                #expect(try reply.object()["removed"] as? Bool == true, "\(reply.body)")
                #expect(try await live.get(path, apiKey: staff.acme.apiKey).status == 404, "the marker is gone")
            }
        }
    }

    @Test("positions are posted by device keys and by drivers for their linked device; everyone else gets 403")
    func postLocations() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            for (role, user) in [("viewer", staff.viewer), ("admin", staff.admin), ("dispatcher", staff.dispatcher)] {
                let reply = try await live.post("/api/v1/locations", bearer: user.accessToken, json: Fixes.object(9))
                ValidationTests.expectError(reply, status: 403, code: "forbidden", "\(role) posts")
                #expect((try reply.error()["message"] as? String)?.contains("you are \(role)") == true, "\(reply.body)")
            }
            let idle = try await live.post("/api/v1/locations", bearer: staff.idleDriver.accessToken, json: Fixes.object(9))
            ValidationTests.expectError(idle, status: 403, code: "forbidden", "a driver without a device posts")
            #expect((try idle.error()["message"] as? String)?.contains("No device is linked") == true, "\(idle.body)")
            #expect(try await ValidationTests.positionCount(live.databaseURL) == 0, "a refused post stores nothing")

            let byDevice = try await live.post("/api/v1/locations", apiKey: staff.acme.apiKey, json: Fixes.object(1))
            #expect(byDevice.status == 202, "\(byDevice.body)")
            let byDriver = try await live.post("/api/v1/locations", bearer: staff.driver.accessToken, json: Fixes.object(2))
            #expect(byDriver.status == 202, "\(byDriver.body)")
            #expect(try byDriver.object()["accepted"] as? Int == 1)
            let position = try await live.get("/api/v1/devices/\(staff.acme.device.id)/position", apiKey: staff.acme.apiKey)
            #expect(try position.object().fixIndex == 2, "the driver's fix is the linked device's: \(position.body)")
            #expect(try await ValidationTests.positionCount(live.databaseURL) == 2)
        }
    }

    @Test("admins, dispatchers and viewers read every device; a driver only theirs; a device key cannot list")
    func reads() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let (second, secondKey) = try await live.repository.createDevice(tenant: staff.acme.tenant, name: "van-2", group: "default", grade: 0)
            try await live.postPositions(Fixes.object(1), apiKey: staff.acme.apiKey, expecting: 1)
            try await live.postPositions(Fixes.object(2), apiKey: secondKey, expecting: 1)
            for user in [staff.admin, staff.dispatcher, staff.viewer] {
                let list = try await live.get("/api/v1/devices", bearer: user.accessToken)
                #expect((try list.object()["devices"] as? [[String: Any]])?.count == 2, "\(user.record.role): \(list.body)")
                #expect(try await live.get("/api/v1/devices/\(second.id)/position", bearer: user.accessToken).status == 200)
            }
            let list = try await live.get("/api/v1/devices", bearer: staff.driver.accessToken)
            let ids = (try list.object()["devices"] as? [[String: Any]])?.compactMap { ($0["device_id"] as? String).flatMap(UUID.init(uuidString:)) }
            #expect(ids == [staff.acme.device.id], "\(list.body)")
            #expect(try await live.get("/api/v1/devices/\(staff.acme.device.id)/position", bearer: staff.driver.accessToken).status == 200)
            let foreign = try await live.get("/api/v1/devices/\(second.id)/position", bearer: staff.driver.accessToken)
            ValidationTests.expectError(foreign, status: 404, code: "not_found", "a driver reading another device")
            TenantStaff.expectDeviceForbidden(try await live.get("/api/v1/devices", apiKey: staff.acme.apiKey), "a device lists devices")
        }
    }
}
