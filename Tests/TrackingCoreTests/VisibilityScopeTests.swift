import Foundation
import Testing
import TrackingCore

@Suite("VisibilityScope and StreamFilter")
struct VisibilityScopeTests {
    static func parse(_ json: String) throws -> VisibilityScope {
        let value = try JSONDecoder().decode(JSONValue.self, from: Data(json.utf8))
        return try VisibilityScope(json: value)
    }

    @Test("up-to mode allows grades up to the maximum; explicit mode exactly the listed ones; other groups nothing")
    func modes() throws {
        let scope = try Self.parse(#"{"groups":{"vans":{"max_grade":3},"trucks":{"grades":[1,4]}}}"#)
        #expect(scope.allows(group: "vans", grade: 0))
        #expect(scope.allows(group: "vans", grade: 3))
        #expect(!scope.allows(group: "vans", grade: 4))
        #expect(scope.allows(group: "trucks", grade: 4))
        #expect(!scope.allows(group: "trucks", grade: 2))
        #expect(!scope.allows(group: "bikes", grade: 0))
        #expect(try Self.parse(String(decoding: JSONEncoder().encode(scope.json), as: UTF8.self)) == scope, "round-trips")
    }

    @Test("invalid scopes are 422 naming the field", arguments: [
        (#"[]"#, "scope"),
        (#"{"groups":{"vans":{"max_grade":3}},"extra":1}"#, "extra"),
        (#"{"groups":[]}"#, "groups"),
        (#"{"groups":{"vans":{}}}"#, "groups.vans"),
        (#"{"groups":{"vans":{"max_grade":3,"grades":[1]}}}"#, "groups.vans"),
        (#"{"groups":{"vans":{"max_grade":1.5}}}"#, "groups.vans.max_grade"),
        (#"{"groups":{"vans":{"max_grade":1001}}}"#, "groups.vans.max_grade"),
        (#"{"groups":{"vans":{"grades":[]}}}"#, "groups.vans.grades"),
        (#"{"groups":{"vans":{"grades":["1"]}}}"#, "groups.vans.grades"),
        (#"{"groups":{"":{"max_grade":1}}}"#, "groups."),
    ])
    func invalid(json: String, field: String) throws {
        do {
            _ = try Self.parse(json)
            Issue.record("accepted \(json)")
        } catch let error as APIError {
            #expect(error.status == 422)
            #expect(error.field == field)
        }
    }

    @Test("filters: drivers see their device, no device means nothing; others their scope or everything")
    func filters() {
        let device = UUID()
        let mine = EventAudience(device: device, group: "vans", grade: 9)
        let other = EventAudience(device: UUID(), group: "vans", grade: 1)
        let scope = VisibilityScope(groups: ["vans": .upTo(1)])
        #expect(StreamFilter.forUser(role: .driver, scope: scope, device: device) == .device(device))
        #expect(StreamFilter.forUser(role: .driver, scope: nil, device: nil) == .nothing)
        #expect(StreamFilter.forUser(role: .viewer, scope: nil, device: nil) == .everything)
        #expect(StreamFilter.forUser(role: .admin, scope: scope, device: nil) == .scope(scope))
        #expect(StreamFilter.device(device).allows(mine) && !StreamFilter.device(device).allows(other))
        #expect(StreamFilter.scope(scope).allows(other) && !StreamFilter.scope(scope).allows(mine))
        #expect(StreamFilter.group("vans").allows(mine) && !StreamFilter.group("trucks").allows(mine))
        #expect(StreamFilter.nothing.allows(nil) == false)
        #expect(StreamFilter.group("trucks").allows(nil), "events about no device are for everyone on the stream")
    }
}
