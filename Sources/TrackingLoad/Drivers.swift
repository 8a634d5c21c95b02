import AsyncHTTPClient
import Foundation
import NIOCore

/// One simulated vehicle posting single fixes at a steady rate over `POST /api/v1/locations`.
struct DriverLoop {
    let driver: Fleet.Driver
    let interval: Duration
    let baseURL: String
    let http: HTTPClient
    let counters: LoadCounters
    let ingestLatency: LatencyRecorder

    /// Posts until `end`; returns how many fixes the server accepted.
    func run(start: ContinuousClock.Instant, end: ContinuousClock.Instant) async -> Int64 {
        var track = StreetTrack(seed: UInt64(driver.index) &* 7_919 &+ 17)
        let phase = interval * Double.random(in: 0..<1)
        var next = start + phase
        var number: Int64 = 0
        var accepted: Int64 = 0
        let seconds = Double(interval.components.seconds) + Double(interval.components.attoseconds) / 1e18
        let url = baseURL + "/api/v1/locations"
        let booking = driver.booking.map { #","booking_id":"\#($0)""# } ?? ""
        while next < end, !Task.isCancelled {
            try? await Task.sleep(until: next, clock: .continuous)
            next += interval
            if next < .now - interval { next = .now }  // far behind: do not burst to catch up
            number += 1
            let fix = track.advance(seconds: seconds)
            let sent = wallMicros()
            let body = #"{"latitude":\#(fix.latitude),"longitude":\#(fix.longitude),"timestamp":"\#(isoTimestamp(micros: sent))","speed":\#(fix.speed),"heading":\#(fix.heading)\#(booking),"attributes":{"sim_d":\#(driver.index),"sim_n":\#(number),"sim_us":\#(sent)}}"#
            let began = ContinuousClock.now
            do {
                let (status, _) = try await LoadHTTP.sendRaw(http, "POST", url, body: ByteBuffer(string: body),
                                                             headers: ["X-API-Key": driver.apiKey])
                if status == 202 {
                    accepted += 1
                    counters.posts.add(1, ordering: .relaxed)
                    counters.positions.add(1, ordering: .relaxed)
                    ingestLatency.record(microseconds: (ContinuousClock.now - began).microseconds)
                } else {
                    counters.postErrors.add(1, ordering: .relaxed)
                }
            } catch {
                counters.postErrors.add(1, ordering: .relaxed)
            }
        }
        return accepted
    }
}

extension Duration {
    var microseconds: Int64 { components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000 }
    var secondsDouble: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
