import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

@Suite("REST: health", .timeLimit(.minutes(3)))
struct HealthTests {
    @Test("/health reports the listener and counts an open stream; /health/ready is 200")
    func healthCounts() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let idle = try await live.health(until: { $0["listener_connected"] as? Bool == true })
            #expect(idle["status"] as? String == "ok")
            #expect(idle["database"] as? Bool == true)
            #expect(idle["subscribers"] as? Int == 0)
            #expect(idle["channels_listened"] as? Int == 0)
            #expect(idle["listener_reconnects"] as? Int == 0)

            let ready = try await live.get("/health/ready")
            #expect(ready.status == 200)
            #expect(try ready.object()["ready"] as? Bool == true)

            let a = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            let b = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            let c = try await live.stream("/api/v1/bookings/trip-1/stream", apiKey: setup.apiKey)
            for stream in [a, b, c] { _ = try await stream.opening() }
            let busy = try await live.get("/health").object()
            #expect(busy["listener_connected"] as? Bool == true)
            #expect(busy["subscribers"] as? Int == 3, "\(busy)")
            #expect(busy["channels_listened"] as? Int == 2, "one tenant channel and one booking channel: \(busy)")

            // Closing the streams is noticed: the counts go back to zero.
            for stream in [a, b, c] { await stream.close() }
            let after = try await live.health(until: { ($0["subscribers"] as? Int) == 0 && ($0["channels_listened"] as? Int) == 0 })
            #expect(after["status"] as? String == "ok")
        }
    }
}
