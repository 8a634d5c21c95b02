import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("REST: latest position of a device", .timeLimit(.minutes(3)))
struct LatestPositionTests {
    @Test("GET /api/v1/devices/{id}/position returns the newest fix; another tenant's device and an unknown id are the same 404")
    func latestPosition() async throws {
        try await LiveNode.run { live in
            let acme = try await TestTenant.create(live.repository, id: "acme")
            let other = try await TestTenant.create(live.repository, id: "other", deviceName: "truck-9")
            try await live.postPositions(Fixes.object(20), apiKey: acme.apiKey, expecting: 1)
            try await live.postPositions(Fixes.object(10), apiKey: acme.apiKey, expecting: 1)  // older fix, posted later
            try await live.postPositions(Fixes.object(5), apiKey: other.apiKey, expecting: 1)

            let reply = try await live.get("/api/v1/devices/\(acme.device.id)/position", apiKey: acme.apiKey)
            #expect(reply.status == 200, "\(reply.body)")
            let position = try reply.object()
            #expect(position["device_id"] as? String == acme.device.id.uuidString.lowercased())
            #expect(position.fixIndex == 20, "the newest fix by fix time, not the last posted")
            #expect(position["latitude"] as? Double == Fixes.latitude(20))
            #expect(position["longitude"] as? Double == Fixes.longitude(20))
            #expect(position["timestamp"] as? String == Fixes.fixTime(20).iso8601)
            #expect(position["seq"] as? Int == 1)

            let foreignID = other.device.id.uuidString
            let randomID = UUID().uuidString
            let foreign = try await live.get("/api/v1/devices/\(foreignID)/position", apiKey: acme.apiKey)
            let unknown = try await live.get("/api/v1/devices/\(randomID)/position", apiKey: acme.apiKey)
            ValidationTests.expectError(foreign, status: 404, code: "not_found", "another tenant's device")
            ValidationTests.expectError(unknown, status: 404, code: "not_found", "a random id")
            // Identical apart from the id the caller sent.
            #expect(foreign.body.replacingOccurrences(of: foreignID, with: "ID") == unknown.body.replacingOccurrences(of: randomID, with: "ID"))
            #expect(!foreign.body.contains("other") && !foreign.body.contains("truck"), "the 404 must not leak the owner: \(foreign.body)")

            // The other tenant does see its own device.
            let own = try await live.get("/api/v1/devices/\(foreignID)/position", apiKey: other.apiKey)
            #expect(own.status == 200)
            #expect(try own.object().fixIndex == 5)
        }
    }
}
