import AsyncHTTPClient
import Foundation

/// Keeps the demo vans driving: each posts a fix a second over `POST /api/v1/locations` with
/// its device key, exactly as a phone would, along the StreetTrack its customers were placed
/// on. Runs until the calling task is cancelled.
public struct DemoDriving: Sendable {
    public let fleet: DemoFleet
    public let baseURL: String

    public init(fleet: DemoFleet, baseURL: String) {
        self.fleet = fleet
        self.baseURL = baseURL
    }

    /// Drives until cancelled; `problem` hears about refused posts (at most one line per van per minute).
    public func run(problem: @escaping @Sendable (String) -> Void) async throws {
        try await LoadHTTP.withClient(connections: 8) { http in
            await withTaskGroup(of: Void.self) { group in
                for vehicle in fleet.vehicles {
                    group.addTask { await drive(vehicle, http: http, problem: problem) }
                }
            }
        }
    }

    private func drive(_ vehicle: DemoFleet.Vehicle, http: HTTPClient, problem: @Sendable (String) -> Void) async {
        var track = StreetTrack(seed: vehicle.seed)
        var parkedAt = track.advance(seconds: 1)
        var lastComplaint = ContinuousClock.now - .seconds(60)
        // Spread the vans over the second so the server sees a steady stream, not a burst.
        try? await Task.sleep(for: .milliseconds(Int.random(in: 0..<1_000)))
        while !Task.isCancelled {
            let tick = ContinuousClock.now
            var fix = vehicle.parked ? parkedAt : track.advance(seconds: 1)
            if vehicle.parked { fix.speed = 0; parkedAt = fix }
            let body = #"{"latitude":\#(fix.latitude),"longitude":\#(fix.longitude),"speed":\#(fix.speed),"heading":\#(fix.heading),"timestamp":"\#(Date().formatted(.iso8601))"}"#
            do {
                let (status, text) = try await LoadHTTP.send(http, "POST", baseURL + "/api/v1/locations", body: body,
                                                             headers: ["X-API-Key": vehicle.apiKey], timeout: .seconds(10))
                if status != 202, ContinuousClock.now - lastComplaint > .seconds(60) {
                    lastComplaint = .now
                    problem("\(vehicle.name): POST /api/v1/locations answered \(status): \(text.prefix(200))")
                }
            } catch {
                if Task.isCancelled { return }
                if ContinuousClock.now - lastComplaint > .seconds(60) {
                    lastComplaint = .now
                    problem("\(vehicle.name): \(error)")
                }
            }
            try? await Task.sleep(until: tick + .seconds(1))
        }
    }
}
