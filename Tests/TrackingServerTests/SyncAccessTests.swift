import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Who may post change events (an admin or the tenant's sync key), who may read the sync tables
/// (staff and the sync key, not drivers or devices), who may see lag, dead letters and mappings
/// (admins), and that one tenant never sees another's rows.
@Suite("sync: access and tenancy", .timeLimit(.minutes(3)))
struct SyncAccessTests {
    static let event = Debezium.json(Debezium.postgres("c", table: "customers", after: Debezium.row(.customers, id: 42, n: 1),
                                                       lsn: 100, tsMs: Debezium.baseMs))

    @Test("posting: sync key and admin 200; dispatcher, viewer, driver, device 403; no or unknown credentials 401")
    func posting() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let key = try #require(try await live.repository.createSyncKey(tenant: staff.acme.tenant, name: "debezium")).apiKey
            #expect(try await SyncAPI.post(live, Self.event, apiKey: key).status == 200)
            #expect(try await SyncAPI.post(live, Self.event, bearer: staff.admin.accessToken).status == 200)
            for (role, user) in staff.nonAdmins {
                ValidationTests.expectError(try await SyncAPI.post(live, Self.event, bearer: user.accessToken), status: 403,
                                            code: "forbidden", "\(role) posting")
            }
            ValidationTests.expectError(try await SyncAPI.post(live, Self.event, apiKey: staff.acme.apiKey), status: 403,
                                        code: "forbidden", "a device key posting")
            ValidationTests.expectError(try await SyncAPI.post(live, Self.event), status: 401, code: "unauthorized", "no credentials")
            let unknown = "pgs_" + String(repeating: "ab", count: 32)
            ValidationTests.expectError(try await SyncAPI.post(live, Self.event, apiKey: unknown), status: 401, code: "unauthorized", "an unknown sync key")
            ValidationTests.expectError(try await SyncAPI.post(live, Self.event, apiKey: "pgs_short"), status: 401, code: "unauthorized", "a malformed sync key")
            // One applied (the sync key's), one skipped (the admin's redelivery); the refusals wrote nothing.
            let state = try #require(try await SyncSQL.state(live, .customers))
            #expect(state.applied == 1 && state.skipped == 1 && state.errors == 0, "\(state)")
        }
    }

    @Test("reading: staff and the sync key read rows and status; drivers and devices 403; lag, dead letters and mappings are admin-only (a sync key gets 403)")
    func reading() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let key = try #require(try await live.repository.createSyncKey(tenant: staff.acme.tenant, name: "debezium")).apiKey
            #expect(try await SyncAPI.post(live, Self.event, apiKey: key).status == 200)
            let readers: [(String, String?, String?)] = [("admin", nil, staff.admin.accessToken), ("dispatcher", nil, staff.dispatcher.accessToken),
                                                          ("viewer", nil, staff.viewer.accessToken), ("sync key", key, nil)]
            for (who, apiKey, bearer) in readers {
                for path in ["/api/v1/sync/customers/42", "/api/v1/sync/customers", "/api/v1/sync/status"] {
                    let reply = try await live.get(path, apiKey: apiKey, bearer: bearer)
                    #expect(reply.status == 200, "\(who) GET \(path): \(reply.status) \(reply.body.prefix(200))")
                }
            }
            for path in ["/api/v1/sync/customers/42", "/api/v1/sync/customers", "/api/v1/sync/status", "/api/v1/sync/lag"] {
                ValidationTests.expectError(try await live.get(path, bearer: staff.driver.accessToken), status: 403, code: "forbidden", "driver \(path)")
                ValidationTests.expectError(try await live.get(path, apiKey: staff.acme.apiKey), status: 403, code: "forbidden", "device \(path)")
                ValidationTests.expectError(try await live.get(path), status: 401, code: "unauthorized", "anonymous \(path)")
            }
            for path in ["/api/v1/sync/lag", "/api/v1/sync/dead-letters", "/api/v1/sync/mappings"] {
                #expect(try await live.get(path, bearer: staff.admin.accessToken).status == 200, "admin \(path)")
                ValidationTests.expectError(try await live.get(path, bearer: staff.dispatcher.accessToken), status: 403, code: "forbidden", "dispatcher \(path)")
                ValidationTests.expectError(try await live.get(path, bearer: staff.viewer.accessToken), status: 403, code: "forbidden", "viewer \(path)")
                ValidationTests.expectError(try await live.get(path, apiKey: key), status: 403, code: "forbidden", "sync key \(path)")
                ValidationTests.expectError(try await live.get(path, apiKey: "pgs_" + String(repeating: "0", count: 64)), status: 401,
                                            code: "unauthorized", "unknown sync key \(path)")
            }
            let put = try await live.request(.PUT, "/api/v1/sync/mappings", apiKey: key, body: .init(string: #"{"mappings":[]}"#))
            ValidationTests.expectError(put, status: 403, code: "forbidden", "a sync key changing mappings")
            ValidationTests.expectError(try await live.put("/api/v1/sync/mappings", bearer: staff.dispatcher.accessToken, json: #"{"mappings":[]}"#),
                                        status: 403, code: "forbidden", "a dispatcher changing mappings")
        }
    }

    @Test("two tenants with the same ids: each key writes its own tenant; rows, lists, status and lag never show the other's")
    func tenantIsolation() async throws {
        try await LiveNode.run { live in
            let acme = try await SyncTenant.create(live)
            let globex = try await SyncTenant.create(live, id: "globex")
            try await SyncAPI.apply(live, Debezium.array([
                Debezium.postgres("c", table: "customers", after: ["id": 42, "name": "Acme shop"], lsn: 100, tsMs: Debezium.baseMs),
                Debezium.postgres("c", table: "customers", after: ["id": 43, "name": "Acme only"], lsn: 110, tsMs: Debezium.baseMs),
            ]), to: acme)
            try await SyncAPI.apply(live, Debezium.json(
                Debezium.postgres("c", table: "customers", after: ["id": 42, "name": "Globex shop"], lsn: 100, tsMs: Debezium.baseMs)), to: globex)
            // globex's event at the same position did not count as a redelivery of acme's.
            #expect(try await SyncSQL.state(live, .customers, tenant: "globex")?.applied == 1)

            for (sync, name) in [(acme, "Acme shop"), (globex, "Globex shop")] {
                for (apiKey, bearer) in [(sync.syncKey, nil), (nil, sync.admin.accessToken)] as [(String?, String?)] {
                    let row = try await SyncAPI.read(live, "/api/v1/sync/customers/42", apiKey: apiKey, bearer: bearer)
                    #expect((row["data"] as? [String: Any])?["name"] as? String == name, "\(sync.id): \(row)")
                }
                let status = try await SyncAPI.read(live, "/api/v1/sync/status", bearer: sync.admin.accessToken)
                #expect(SyncAPI.table(.customers, in: status)["rows"] as? Int == (sync.id == "acme" ? 2 : 1), "\(sync.id): \(status)")
            }
            let globexList = try await SyncAPI.read(live, "/api/v1/sync/customers", bearer: globex.admin.accessToken)
            check(SyncAPI.rows(globexList).compactMap { $0["id"] as? String } == ["42"], "\(globexList)")
            // acme's row 43 reads, for globex, exactly like a row that exists nowhere.
            let other = try await live.get("/api/v1/sync/customers/43", bearer: globex.admin.accessToken)
            let nowhere = try await live.get("/api/v1/sync/customers/44", bearer: globex.admin.accessToken)
            ValidationTests.expectError(other, status: 404, code: "not_found", "another tenant's row")
            #expect(other.body == nowhere.body.replacingOccurrences(of: "44", with: "43"), "\(other.body) / \(nowhere.body)")
            let lag = try await SyncAPI.read(live, "/api/v1/sync/lag", bearer: globex.admin.accessToken)
            #expect(SyncAPI.table(.customers, in: lag)["events_applied"] as? Int == 1, "\(lag)")
        }
    }

    @Test("source ids with spaces, slashes, percent signs and non-ASCII text are stored as sent and found by their percent-encoded path")
    func awkwardIds() async throws {
        try await LiveNode.run { live in
            let sync = try await SyncTenant.create(live)
            let ids = ["AB 12/Ü", "a/b/c", "100%", "東京-1", "x?y#z", "plus+sign", "émoji 🚚"]
            try await SyncAPI.apply(live, Debezium.array(ids.enumerated().map { n, id in
                Debezium.postgres("c", table: "products", after: ["id": id, "name": "P\(n)"], lsn: Int64(100 + n), tsMs: Debezium.baseMs)
            }), to: sync)
            #expect(try await SyncSQL.rows(live, .products, tenant: sync.id).map(\.id).sorted() == ids.sorted())
            for (n, id) in ids.enumerated() {
                let path = "/api/v1/sync/products/" + (id.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? id)
                let row = try await SyncAPI.read(live, path, bearer: sync.admin.accessToken)
                #expect(row["id"] as? String == id && (row["data"] as? [String: Any])?["name"] as? String == "P\(n)", "\(path): \(row)")
            }
            // Paging through them with the cursor as a (percent-encoded) query value.
            var seen: [String] = []
            var cursor: String?
            for _ in 0..<10 {
                let query = cursor.map { "&cursor=" + ($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0) } ?? ""
                let page = try await SyncAPI.read(live, "/api/v1/sync/products?limit=3" + query, bearer: sync.admin.accessToken)
                seen += SyncAPI.rows(page).compactMap { $0["id"] as? String }
                cursor = page["next_cursor"] as? String
                if cursor == nil { break }
            }
            #expect(Set(seen) == Set(ids) && seen.count == ids.count, "\(seen)")
            // Percent-encoding that is not UTF-8 names no row (the router refuses it before the route).
            let broken = try await live.get("/api/v1/sync/products/%FF%FE", bearer: sync.admin.accessToken)
            ValidationTests.expectError(broken, status: 404, code: "not_found", "an id that is not UTF-8")
            let long = try await live.get("/api/v1/sync/products/" + String(repeating: "x", count: 201), bearer: sync.admin.accessToken)
            ValidationTests.expectError(long, status: 404, code: "not_found", "an id longer than any key")
        }
    }
}
