import Foundation
import NIOCore
import NIOHTTP1
import Testing
import TrackingCore
import TrackingServer
import TrackingStore
import TrackingTestSupport

/// U+0000 in any text input: PostgreSQL cannot store it and answered 500 (22021) in a dozen
/// places. Every string of every JSON body below, one at a time, and the text query parameters
/// and path segments, must answer 422 naming the field.
@Suite("NUL characters: every text field of every endpoint answers 422 naming it", .timeLimit(.minutes(3)))
struct NULCharacterSweepTests {
    enum Credential { case none, admin, device }

    struct Endpoint {
        let method: HTTPMethod
        let path: String
        let credential: Credential
        /// Every string in it is tried with a NUL appended.
        let body: String
    }

    struct Fleet {
        let device: String, driver: String, route: String, visit: String, user: String
    }

    static func endpoints(_ ids: Fleet) -> [Endpoint] {
        [
            Endpoint(method: .POST, path: "/api/v1/auth/login", credential: .none,
                     body: #"{"tenant":"acme","email":"nobody@example.com","password":"wrong password"}"#),
            Endpoint(method: .POST, path: "/api/v1/auth/refresh", credential: .none, body: #"{"refresh_token":"rt"}"#),
            Endpoint(method: .POST, path: "/api/v1/auth/logout", credential: .admin, body: #"{"refresh_token":"rt"}"#),
            Endpoint(method: .POST, path: "/api/v1/auth/register", credential: .admin,
                     body: #"{"email":"new@example.com","name":"New","password":"long enough password","role":"viewer"}"#),
            Endpoint(method: .POST, path: "/api/v1/devices", credential: .admin,
                     body: #"{"name":"van-9","group":"north","unique_id":"U-900"}"#),
            Endpoint(method: .PATCH, path: "/api/v1/devices/\(ids.device)", credential: .admin, body: #"{"name":"van-1","group":"south"}"#),
            Endpoint(method: .POST, path: "/api/v1/drivers", credential: .admin,
                     body: #"{"name":"Dee","vehicle_plate":"B-XY 1","vehicle_type":"van","status":"active"}"#),
            Endpoint(method: .PATCH, path: "/api/v1/drivers/\(ids.driver)", credential: .admin,
                     body: #"{"name":"Dee","vehicle_plate":"B-XY 2","vehicle_type":"car"}"#),
            Endpoint(method: .POST, path: "/api/v1/routes", credential: .admin,
                     body: #"{"driver_id":"\#(ids.driver)","name":"North loop","scheduled_date":"2026-11-23"}"#),
            Endpoint(method: .PATCH, path: "/api/v1/routes/\(ids.route)", credential: .admin, body: #"{"name":"South loop"}"#),
            Endpoint(method: .PATCH, path: "/api/v1/routes/\(ids.route)/status", credential: .admin, body: #"{"status":"active"}"#),
            Endpoint(method: .POST, path: "/api/v1/visits", credential: .admin,
                     body: #"{"route_id":"\#(ids.route)","sequence":2,"customer_id":"c1","visit_type":"delivery","notes":"ring twice","window_start":"2026-11-23T09:00:00Z"}"#),
            Endpoint(method: .PATCH, path: "/api/v1/visits/\(ids.visit)", credential: .admin,
                     body: #"{"customer_id":"c1","notes":"back door"}"#),
            Endpoint(method: .PATCH, path: "/api/v1/visits/\(ids.visit)/status", credential: .admin, body: #"{"status":"arrived"}"#),
            Endpoint(method: .PUT, path: "/api/v1/users/\(ids.user)/scope", credential: .admin,
                     body: #"{"groups":["north"],"devices":["\#(ids.device)"]}"#),
            Endpoint(method: .PUT, path: "/api/v1/sync/mappings", credential: .admin,
                     body: #"{"mappings":[{"source_table":"crm_customers","target_table":"customers","key_column":"id"}]}"#),
            Endpoint(method: .POST, path: "/api/v1/sync/changes", credential: .admin,
                     body: #"[{"op":"c","source":{"table":"customers","ts_ms":1},"after":{"id":"c-1","name":"Ada"}}]"#),
            Endpoint(method: .POST, path: "/api/v1/locations", credential: .device,
                     body: #"[{"latitude":52.5,"longitude":13.4,"booking_id":"b-1","attributes":{"note":"n"}}]"#),
            Endpoint(method: .POST, path: "/api/v1/events", credential: .device,
                     body: #"{"booking_id":"b-1","type":"pickup","note":"n"}"#),
            Endpoint(method: .POST, path: "/api/v1/ingest/traccar", credential: .device,
                     body: #"{"position":{"latitude":52.5,"longitude":13.4,"fixTime":"2026-11-23T09:00:00Z"},"device":{"uniqueId":"U-1","name":"van"}}"#),
            Endpoint(method: .POST, path: "/api/v1/ingest/traccar/events", credential: .device,
                     body: #"{"event":{"type":"geofenceEnter","eventTime":"2026-11-23T09:00:00Z"},"device":{"uniqueId":"U-1"}}"#),
            Endpoint(method: .POST, path: "/api/v1/ingest/osmand", credential: .device,
                     body: #"{"device_id":"U-1","location":{"timestamp":"2026-11-23T09:00:00Z","coords":{"latitude":52.5,"longitude":13.4}}}"#),
            Endpoint(method: .POST, path: "/api/v1/ingest/owntracks", credential: .device,
                     body: #"{"_type":"location","lat":52.5,"lon":13.4,"tst":1795000000,"tid":"ab"}"#),
        ]
    }

    /// Each string's path in `value`, as the error's `field` names it (`mappings[0].source_table`;
    /// the element of a top-level array is the error's `index`), with the JSON that has a NUL
    /// appended to that string alone.
    static func mutations(of value: Any, path: String = "", index: Int? = nil,
                          rebuild: @escaping (Any) -> Any = { $0 }) -> [(field: String, index: Int?, body: Any)] {
        switch value {
        case let string as String:
            return [(path, index, rebuild(string + "\u{0}"))]
        case let array as [Any]:
            return array.indices.flatMap { i in
                let topLevel = path.isEmpty && index == nil
                return mutations(of: array[i], path: topLevel ? "" : "\(path)[\(i)]", index: topLevel ? i : index) { changed in
                    var copy = array
                    copy[i] = changed
                    return rebuild(copy)
                }
            }
        case let object as [String: Any]:
            return object.keys.sorted().flatMap { key in
                mutations(of: object[key]!, path: path.isEmpty ? key : "\(path).\(key)", index: index) { changed in
                    var copy = object
                    copy[key] = changed
                    return rebuild(copy)
                }
            }
        default:
            return []
        }
    }

    @Test("every string of every JSON body, one at a time, with U+0000: 422 validation_failed naming that field, never 500")
    func jsonBodies() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let (driver, route) = try await FleetTests.driverAndRoute(live, bearer: admin.accessToken, device: setup.device.id)
            try await FleetTests.syncCustomers(live, tenant: setup.tenant.rawValue, count: 2)
            let visit = try FleetTests.created(try await live.post("/api/v1/visits", bearer: admin.accessToken, json:
                #"{"route_id":"\#(route)","customer_id":"c0","sequence":1}"#), "visit")
            let ids = Fleet(device: setup.device.id.uuidString.lowercased(), driver: driver, route: route, visit: visit,
                            user: admin.id.uuidString.lowercased())
            var tried = 0
            for endpoint in Self.endpoints(ids) {
                let template = try JSONSerialization.jsonObject(with: Data(endpoint.body.utf8))
                for mutation in Self.mutations(of: template) {
                    let body = try JSONSerialization.data(withJSONObject: mutation.body)
                    let reply = try await live.request(
                        endpoint.method, endpoint.path, apiKey: endpoint.credential == .device ? setup.apiKey : nil,
                        bearer: endpoint.credential == .admin ? admin.accessToken : nil, body: ByteBuffer(bytes: body))
                    let what = "\(endpoint.method) \(endpoint.path) with NUL in \(mutation.field)"
                    #expect(reply.status == 422, "\(what): \(reply.status) \(reply.body.prefix(200))")
                    let error = try? reply.error()
                    #expect(error?["field"] as? String == mutation.field, "\(what): \(reply.body.prefix(200))")
                    #expect(error?["index"] as? Int == mutation.index, "\(what): \(reply.body.prefix(200))")
                    tried += 1
                }
            }
            #expect(tried > 50)
        }
    }

    @Test("U+0000 in a query parameter, a form field or a path segment: 422 naming it")
    func queryAndPath() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let cases: [(String, String, String?)] = [
                ("/api/v1/sync/customers?cursor=a%00b", "cursor", admin.accessToken),
                ("/api/v1/sync/customers/c%00d", "path", admin.accessToken),
                ("/api/v1/devices?group=n%00", "group", admin.accessToken),
                ("/api/v1/ingest/osmand?id=U%001&lat=52.5&lon=13.4", "id", nil),
            ]
            for (path, field, bearer) in cases {
                let reply = try await live.request(.GET, path, apiKey: bearer == nil ? setup.apiKey : nil, bearer: bearer)
                #expect(reply.status == 422, "\(path): \(reply.status) \(reply.body.prefix(200))")
                #expect((try? reply.error())?["field"] as? String == field, "\(path): \(reply.body.prefix(200))")
            }
            let form = try await live.request(.POST, "/api/v1/ingest/osmand", apiKey: setup.apiKey,
                                              body: ByteBuffer(string: "id=U-1&lat=52.5&lon=13.4&driverUniqueId=a%00b"))
            #expect(form.status == 422, "form: \(form.status) \(form.body.prefix(200))")
            #expect((try? form.error())?["field"] as? String == "driverUniqueId", "form: \(form.body.prefix(200))")
        }
    }
}
