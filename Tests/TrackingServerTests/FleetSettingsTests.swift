import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// `GET|PUT /api/v1/settings/fleet`: users read, admins change, every bad value is a 422 naming
/// its field, and the stored row is what the fleet trigger reads.
@Suite("fleet settings", .timeLimit(.minutes(3)))
struct FleetSettingsTests {
    static let defaults: [String: Double] = [
        "default_radius_metres": 100, "departure_margin_metres": 30, "speed_window_seconds": 300, "eta_floor_speed": 2,
    ]

    static func values(_ reply: LiveNode.Reply) throws -> [String: Double] {
        try reply.object().compactMapValues { ($0 as? NSNumber)?.doubleValue }
    }

    @Test("defaults for every role; an admin's PUT is stored and read back; others are refused")
    func readAndChange() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let dispatcher = try await live.user(.dispatcher, in: setup.tenant)
            let viewer = try await live.user(.viewer, in: setup.tenant)
            for user in [admin, dispatcher, viewer] {
                let reply = try await live.get("/api/v1/settings/fleet", bearer: user.accessToken)
                #expect(reply.status == 200, "\(reply.body)")
                #expect(try Self.values(reply) == Self.defaults)
            }
            #expect(try await live.get("/api/v1/settings/fleet", apiKey: setup.apiKey).status == 403, "a device key is no user")
            let changed = #"{"default_radius_metres":250,"departure_margin_metres":40.5,"speed_window_seconds":600,"eta_floor_speed":3.5}"#
            #expect(try await live.put("/api/v1/settings/fleet", bearer: dispatcher.accessToken, json: changed).status == 403)
            let put = try await live.put("/api/v1/settings/fleet", bearer: admin.accessToken, json: changed)
            #expect(put.status == 200, "\(put.body)")
            let expected: [String: Double] = [
                "default_radius_metres": 250, "departure_margin_metres": 40.5, "speed_window_seconds": 600, "eta_floor_speed": 3.5,
            ]
            #expect(try Self.values(put) == expected)
            #expect(try Self.values(try await live.get("/api/v1/settings/fleet", bearer: viewer.accessToken)) == expected)
            let stored = try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await Fixes.count("""
                    SELECT count(*)::int FROM tenants WHERE id = 'acme' AND fleet_default_radius_metres = 250
                       AND fleet_departure_margin_metres = 40.5 AND fleet_speed_window_seconds = 600 AND fleet_eta_floor_speed = 3.5
                    """, on: connection)
            }
            #expect(stored == 1, "the columns the fleet trigger reads")
        }
    }

    @Test("each bad value is a 422 naming its field, and nothing is stored")
    func validation() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let admin = try await live.user(.admin, in: setup.tenant)
            let good: [String: String] = [
                "default_radius_metres": "100", "departure_margin_metres": "30", "speed_window_seconds": "300", "eta_floor_speed": "2",
            ]
            let bad: [(String, String)] = [
                ("default_radius_metres", "4"), ("default_radius_metres", "10001"), ("departure_margin_metres", "-1"),
                ("departure_margin_metres", "5001"), ("speed_window_seconds", "9"), ("speed_window_seconds", "300.5"),
                ("eta_floor_speed", "0"), ("eta_floor_speed", "101"), ("eta_floor_speed", "\"fast\""),
            ]
            for (field, value) in bad {
                var body = good
                body[field] = value
                let json = "{" + body.map { #""\#($0.key)":\#($0.value)"# }.joined(separator: ",") + "}"
                let reply = try await live.put("/api/v1/settings/fleet", bearer: admin.accessToken, json: json)
                #expect(reply.status == 422, "\(field)=\(value): \(reply.body)")
                #expect(try reply.error()["field"] as? String == field, "\(field)=\(value): \(reply.body)")
            }
            var missing = good
            missing["eta_floor_speed"] = nil
            let json = "{" + missing.map { #""\#($0.key)":\#($0.value)"# }.joined(separator: ",") + "}"
            let reply = try await live.put("/api/v1/settings/fleet", bearer: admin.accessToken, json: json)
            #expect(reply.status == 422, "\(reply.body)")
            #expect(try Self.values(try await live.get("/api/v1/settings/fleet", bearer: admin.accessToken)) == Self.defaults)
        }
    }
}
