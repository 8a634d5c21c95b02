import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Route metadata advanced in SQL point by point equals a recomputation from the stored points:
/// jitter-aware distance (anchor rule), stops, bbox, speeds, durations; late points rebuild.
@Suite("trips: route metadata", .serialized, .timeLimit(.minutes(4)))
struct TripMetadataTests {
    /// About 14 minutes of a delivery run, one fix per second: a curve at 8 m/s, 60 s at a
    /// traffic light (too short for a stop), a faster stretch peaking at 13.9 m/s, a 400 s
    /// delivery stop, and away again. GPS noise ±3 m while standing, ±0.3 m while driving.
    static func deliveryRun(base: Date) -> (points: [TrackPoint], parked: [(Int, Int)]) {
        var builder = TrackBuilder(start: base)
        builder.drive(150, turn: 0.4)
        builder.park(60)
        builder.drive(100, turn: -0.5) { k in 8 + 5.9 * sin(Double.pi * Double(k) / 99) }
        builder.park(400)
        builder.drive(120, turn: 0.3)
        return (builder.finished(), builder.parked)
    }

    static func settings(_ trip: [String: Any]) throws -> (jitter: Double, radius: Double, seconds: Int) {
        let settings = try #require(trip["settings"] as? [String: Any], "no settings in \(trip)")
        return (try #require(settings["jitter_metres"] as? Double), try #require(settings["stop_radius_metres"] as? Double),
                try #require(settings["stop_seconds"] as? Int))
    }

    static func recompute(_ live: LiveNode, _ trip: [String: Any], booking: String, device: UUID) async throws -> TripSQL.Recomputed {
        let (jitter, radius, seconds) = try settings(trip)
        return try await TripSQL.recompute(live, booking: booking, device: device, jitter: jitter, radius: radius, stopSeconds: seconds)
    }

    /// Every metadata field of `trip` against the recomputation.
    static func expectMatches(_ trip: [String: Any], _ expected: TripSQL.Recomputed, _ comment: Comment,
                              sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(trip["point_count"] as? Int == expected.count, "\(comment): point_count", sourceLocation: sourceLocation)
        let distance = trip["distance_metres"] as? Double ?? -1
        #expect(abs(distance - expected.distance) <= 0.051,
                "\(comment): distance_metres \(distance) vs recomputed \(expected.distance)", sourceLocation: sourceLocation)
        #expect(isoDate(trip["first_fix_at"]) == expected.first, "\(comment): first_fix_at \(trip["first_fix_at"] ?? "nil")",
                sourceLocation: sourceLocation)
        #expect(isoDate(trip["last_fix_at"]) == expected.last, "\(comment): last_fix_at \(trip["last_fix_at"] ?? "nil")",
                sourceLocation: sourceLocation)
        let duration = expected.last.timeIntervalSince(expected.first)
        #expect(trip["duration_seconds"] as? Double == duration, "\(comment): duration_seconds", sourceLocation: sourceLocation)
        if duration > 0 {
            let average = trip["avg_speed"] as? Double ?? -1
            #expect(abs(average - expected.distance / duration) <= 0.001, "\(comment): avg_speed \(average)", sourceLocation: sourceLocation)
        }
        #expect(trip["max_speed"] as? Double == expected.maxSpeed, "\(comment): max_speed", sourceLocation: sourceLocation)
        let bbox = trip["bbox"] as? [Double] ?? []
        #expect(bbox.count == 4, "\(comment): bbox \(trip["bbox"] ?? "nil")", sourceLocation: sourceLocation)
        if bbox.count == 4 {
            let want = [expected.minLon, expected.minLat, expected.maxLon, expected.maxLat]
            check(zip(bbox, want).allSatisfy { abs($0 - $1) < 1e-12 }, "\(comment): bbox \(bbox) vs \(want)", sourceLocation: sourceLocation)
        }
        let stops = trip["stops"] as? [[String: Any]] ?? []
        let finished = stops.filter { $0["ongoing"] == nil }
        #expect(finished.count == expected.stops.count, "\(comment): stops \(stops) vs \(expected.stops)", sourceLocation: sourceLocation)
        for (stop, want) in zip(finished, expected.stops) {
            let start = isoDate(stop["start"])?.timeIntervalSince1970 ?? 0
            let end = isoDate(stop["end"])?.timeIntervalSince1970 ?? 0
            #expect(abs(start - want.start) < 0.001 && abs(end - want.end) < 0.001, "\(comment): stop \(stop) vs \(want)",
                    sourceLocation: sourceLocation)
            #expect(stop["duration_seconds"] as? Double == end - start, "\(comment): stop duration \(stop)", sourceLocation: sourceLocation)
        }
        let (_, _, stopSeconds) = (try? settings(trip)) ?? (0, 0, 0)
        let openSpell = expected.last.timeIntervalSince(expected.spellSince)
        let ongoing = stops.filter { $0["ongoing"] as? Bool == true }
        if trip["status"] as? String == "in_progress", openSpell >= Double(stopSeconds) {
            #expect(ongoing.count == 1, "\(comment): the open spell of \(openSpell) s is an ongoing stop: \(stops)", sourceLocation: sourceLocation)
            if let stop = ongoing.first {
                #expect(isoDate(stop["start"]) == expected.spellSince && isoDate(stop["end"]) == expected.last,
                        "\(comment): ongoing stop \(stop)", sourceLocation: sourceLocation)
            }
        } else {
            #expect(ongoing.isEmpty, "\(comment): no ongoing stop expected: \(stops)", sourceLocation: sourceLocation)
        }
    }

    @Test("830 fixes in batches of 50: distance by the anchor rule, stops, bbox, speeds, times equal a PostGIS recomputation")
    func deliveryRunMatchesRecomputation() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let device = setup.device.id
            let base = TripClock.base()
            let (points, parked) = Self.deliveryRun(base: base)
            #expect(points.count == 830)
            #expect(try await TripAPI.accept(live, "run-1", apiKey: setup.apiKey).status == 201)

            // Midway, 390 s into the delivery stop: the open spell shows as an ongoing stop.
            try await TripAPI.post(live, Array(points[0..<700]), apiKey: setup.apiKey)
            let midway = try await TripAPI.trip(live, "run-1", apiKey: setup.apiKey)
            #expect(midway["status"] as? String == "in_progress")
            let midwayExpected = try await Self.recompute(live, midway, booking: "run-1", device: device)
            #expect(midwayExpected.count == 700)
            Self.expectMatches(midway, midwayExpected, "after 700 fixes")
            check((midway["stops"] as? [[String: Any]])?.contains { $0["ongoing"] as? Bool == true } == true,
                    "the delivery stop is ongoing: \(midway["stops"] ?? "nil")")

            try await TripAPI.post(live, Array(points[700...]), apiKey: setup.apiKey)
            let trip = try await TripAPI.trip(live, "run-1", apiKey: setup.apiKey)
            let settings = try Self.settings(trip)
            #expect(settings.jitter == 10 && settings.radius == 30 && settings.seconds == 300, "the defaults: \(settings)")
            let expected = try await Self.recompute(live, trip, booking: "run-1", device: device)
            Self.expectMatches(trip, expected, "after all 830 fixes")

            // Against the generated track, independently of the recomputation.
            #expect(trip["point_count"] as? Int == 830)
            #expect(isoDate(trip["first_fix_at"]) == points[0].time)
            #expect(trip["duration_seconds"] as? Double == 829)
            #expect(trip["max_speed"] as? Double == points.compactMap(\.speed).max())
            #expect(trip["max_speed"] as? Double == 13.9)
            let bbox = trip["bbox"] as? [Double] ?? []
            let want = [points.map(\.longitude).min()!, points.map(\.latitude).min()!, points.map(\.longitude).max()!, points.map(\.latitude).max()!]
            check(bbox.count == 4 && zip(bbox, want).allSatisfy { abs($0 - $1) < 1e-9 }, "bbox \(bbox) vs \(want)")
            check(bbox.first.map { $0 > 13 && $0 < 14 } == true, "bbox starts with the west longitude: \(bbox)")
            let last = trip["last_position"] as? [String: Any] ?? [:]
            check((last["latitude"] as? Double).map { abs($0 - points[829].latitude) < 1e-7 } == true, "\(last)")
            check((last["longitude"] as? Double).map { abs($0 - points[829].longitude) < 1e-7 } == true, "\(last)")
            #expect(isoDate(last["timestamp"]) == points[829].time)
            #expect(last["speed"] as? Double == points[829].speed)

            // Distance: close to the length of the driven line, far below the raw line with jitter.
            let distance = try #require(trip["distance_metres"] as? Double)
            let parkedTimes = parked.map { (points[$0.0].time, points[$0.1].time) }
            let driven = try await TripSQL.lineLength(live, booking: "run-1", excluding: parkedTimes)
            #expect(driven > 2_500 && driven < 3_500, "the driven part is about 370 s at 8–14 m/s: \(driven)")
            #expect(abs(distance - driven) / driven < 0.03, "distance \(distance) vs driven line \(driven)")
            #expect(expected.rawLength - driven > 1_000, "the standing jitter adds over a kilometre to the raw line: \(expected.rawLength)")
            #expect(distance < expected.rawLength * 0.8, "distance \(distance) vs raw line with jitter \(expected.rawLength)")

            // Stops: only the delivery (400 s); not the 60 s traffic light.
            let stops = trip["stops"] as? [[String: Any]] ?? []
            #expect(stops.count == 1, "\(stops)")
            if let stop = stops.first {
                let (first, lastParked) = parked[1]
                let start = try #require(isoDate(stop["start"]))
                let end = try #require(isoDate(stop["end"]))
                #expect(start >= points[first].time.addingTimeInterval(-5) && start <= points[first].time, "stop start \(start)")
                #expect(end >= points[lastParked].time && end <= points[lastParked].time.addingTimeInterval(5), "stop end \(end)")
                let duration = try #require(stop["duration_seconds"] as? Double)
                #expect(duration >= 399 && duration <= 409, "stop duration \(duration)")
                let spot = points[first - 1]
                let north = ((stop["latitude"] as? Double ?? 0) - spot.latitude) * TrackBuilder.metresPerDegreeLatitude
                let east = ((stop["longitude"] as? Double ?? 0) - spot.longitude) * TrackBuilder.metresPerDegreeLatitude * cos(spot.latitude * .pi / 180)
                #expect((north * north + east * east).squareRoot() < 35, "the stop is where the van stood: \(stop)")
                #expect(stop["ongoing"] == nil)
            }
            let avg = try #require(trip["avg_speed"] as? Double)
            #expect(abs(avg - distance / 829) < 0.001)
        }
    }

    @Test("late fixes (older than the last absorbed, one before the first) rebuild the trip: equal to the recomputation")
    func lateFixesRebuild() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let device = setup.device.id
            let base = TripClock.base()
            let (points, _) = Self.deliveryRun(base: base)
            #expect(try await TripAPI.accept(live, "run-2", apiKey: setup.apiKey).status == 201)
            try await TripAPI.post(live, points, apiKey: setup.apiKey, batch: 100)
            let before = try await TripAPI.trip(live, "run-2", apiKey: setup.apiKey)
            Self.expectMatches(before, try await Self.recompute(live, before, booking: "run-2", device: device), "before the late fixes")
            let distanceBefore = try #require(before["distance_metres"] as? Double)

            // A late fix 60 m off the road, half-way between fixes 75 and 76, at 20 m/s.
            let anchor = points[75]
            var detour = anchor
            detour.time = anchor.time.addingTimeInterval(0.5)
            detour.latitude += 60 / TrackBuilder.metresPerDegreeLatitude
            detour.speed = 20
            try await live.postPositions(detour.json(), apiKey: setup.apiKey, expecting: 1)
            let afterDetour = try await TripAPI.trip(live, "run-2", apiKey: setup.apiKey)
            let expectedDetour = try await Self.recompute(live, afterDetour, booking: "run-2", device: device)
            #expect(expectedDetour.count == 831)
            Self.expectMatches(afterDetour, expectedDetour, "after the late detour fix")
            let distanceDetour = try #require(afterDetour["distance_metres"] as? Double)
            #expect(distanceDetour > distanceBefore + 80, "the detour adds about 2 × 60 m: \(distanceBefore) → \(distanceDetour)")
            #expect(afterDetour["max_speed"] as? Double == 20)
            #expect(isoDate(afterDetour["last_fix_at"]) == points[829].time, "the last fix stays the last")
            #expect(isoDate((afterDetour["last_position"] as? [String: Any])?["timestamp"]) == points[829].time)

            // A batch with a fix 30 s before the first one and a new last one.
            var early = points[0]
            early.time = base.addingTimeInterval(-30)
            early.latitude -= 200 / TrackBuilder.metresPerDegreeLatitude
            var newest = points[829]
            newest.time = points[829].time.addingTimeInterval(1)
            newest.longitude += 8 / TrackBuilder.metresPerDegreeLatitude
            try await live.postPositions(TrackPoint.array([newest, early]), apiKey: setup.apiKey, expecting: 2)
            let rebuilt = try await TripAPI.trip(live, "run-2", apiKey: setup.apiKey)
            let expectedRebuilt = try await Self.recompute(live, rebuilt, booking: "run-2", device: device)
            #expect(expectedRebuilt.count == 833)
            Self.expectMatches(rebuilt, expectedRebuilt, "after a fix before the first")
            #expect(isoDate(rebuilt["first_fix_at"]) == early.time)
            #expect(rebuilt["duration_seconds"] as? Double == 860)
            check((rebuilt["bbox"] as? [Double]).map { $0.count == 4 && abs($0[1] - early.latitude) < 1e-9 } == true,
                    "the early fix is the southmost: \(rebuilt["bbox"] ?? "nil")")

            // Completing keeps the metadata.
            let completed = try await TripAPI.complete(live, "run-2", apiKey: setup.apiKey)
            #expect(completed.status == 200)
            Self.expectMatches(try completed.object(), expectedRebuilt, "completed")
        }
    }

    @Test("an open stop is listed as ongoing; cancelling closes it as a stop with the same start and end")
    func ongoingStopClosesOnFinish() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            var builder = TrackBuilder(start: TripClock.base(), seed: 7)
            builder.drive(30, turn: 1)
            builder.park(320)
            let points = builder.finished()
            #expect(try await TripAPI.accept(live, "wait-1", apiKey: setup.apiKey).status == 201)
            try await TripAPI.post(live, points, apiKey: setup.apiKey, batch: 200)
            let waiting = try await TripAPI.trip(live, "wait-1", apiKey: setup.apiKey)
            let expected = try await Self.recompute(live, waiting, booking: "wait-1", device: setup.device.id)
            Self.expectMatches(waiting, expected, "parked")
            let stops = waiting["stops"] as? [[String: Any]] ?? []
            #expect(stops.count == 1 && stops.first?["ongoing"] as? Bool == true, "\(stops)")
            #expect(isoDate(stops.first?["end"]) == points.last?.time)

            let cancelled = try await TripAPI.cancel(live, "wait-1", apiKey: setup.apiKey)
            #expect(cancelled.status == 200)
            let closed = try cancelled.object()["stops"] as? [[String: Any]] ?? []
            #expect(closed.count == 1, "\(closed)")
            #expect(closed.first?["ongoing"] == nil, "a finished trip has no ongoing stop: \(closed)")
            #expect(closed.first?["start"] as? String == stops.first?["start"] as? String)
            #expect(closed.first?["end"] as? String == stops.first?["end"] as? String)
        }
    }

    @Test("settings apply to trips accepted afterwards only; each trip equals the recomputation with its own settings")
    func settingsApplyToNewTrips() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let (second, secondKey) = try await live.repository.createDevice(tenant: staff.acme.tenant, name: "van-2", group: "default", grade: 0)
            func track(_ start: Date) -> [TrackPoint] {
                var builder = TrackBuilder(start: start, seed: 11)
                builder.drive(60, turn: 0.5)
                builder.park(200)
                builder.drive(60, turn: -0.5)
                return builder.finished()
            }
            let base = TripClock.base()
            #expect(try await TripAPI.accept(live, "old-rules", apiKey: staff.acme.apiKey).status == 201)
            let put = try await live.put("/api/v1/settings/trips", bearer: staff.admin.accessToken,
                                         json: #"{"trip_jitter_metres":50,"trip_stop_radius_metres":60,"trip_stop_seconds":120}"#)
            #expect(put.status == 200, "\(put.body)")
            #expect(try await TripAPI.accept(live, "new-rules", apiKey: secondKey).status == 201)
            try await TripAPI.post(live, track(base), apiKey: staff.acme.apiKey)
            try await TripAPI.post(live, track(base), apiKey: secondKey)

            let old = try await TripAPI.trip(live, "old-rules", apiKey: staff.acme.apiKey)
            let new = try await TripAPI.trip(live, "new-rules", apiKey: secondKey)
            let oldSettings = try Self.settings(old)
            let newSettings = try Self.settings(new)
            #expect(oldSettings.jitter == 10 && oldSettings.radius == 30 && oldSettings.seconds == 300, "\(oldSettings)")
            #expect(newSettings.jitter == 50 && newSettings.radius == 60 && newSettings.seconds == 120, "\(newSettings)")
            let oldExpected = try await Self.recompute(live, old, booking: "old-rules", device: staff.acme.device.id)
            let newExpected = try await Self.recompute(live, new, booking: "new-rules", device: second.id)
            Self.expectMatches(old, oldExpected, "trip under the old settings")
            Self.expectMatches(new, newExpected, "trip under the new settings")
            #expect((old["stops"] as? [Any])?.isEmpty == true, "200 s is no stop under 300 s: \(old["stops"] ?? "nil")")
            #expect((new["stops"] as? [Any])?.count == 1, "200 s is a stop under 120 s: \(new["stops"] ?? "nil")")
            let oldDistance = try #require(old["distance_metres"] as? Double)
            let newDistance = try #require(new["distance_metres"] as? Double)
            #expect(newDistance < oldDistance, "50 m jitter drops more of the track than 10 m: \(oldDistance) vs \(newDistance)")
        }
    }

    @Test("purging the device's history rebuilds its running trip from nothing; later fixes count from there")
    func purgeRebuilds() async throws {
        try await LiveNode.run { live in
            let staff = try await TenantStaff.create(live)
            let key = staff.acme.apiKey
            var builder = TrackBuilder(start: TripClock.base(), seed: 3)
            builder.drive(120, turn: 0.2)
            let points = builder.finished()
            #expect(try await TripAPI.accept(live, "purged", apiKey: key).status == 201)
            try await TripAPI.post(live, Array(points[0..<60]), apiKey: key)
            #expect(try await TripAPI.trip(live, "purged", apiKey: key)["point_count"] as? Int == 60)
            let purge = try await live.post("/api/v1/devices/\(staff.acme.device.id.uuidString.lowercased())/purge",
                                            bearer: staff.admin.accessToken, json: "")
            #expect(purge.status == 200, "\(purge.body)")
            let empty = try await TripAPI.trip(live, "purged", apiKey: key)
            #expect(empty["point_count"] as? Int == 0)
            #expect(empty["distance_metres"] as? Double == 0)
            #expect(empty["bbox"] == nil || empty["bbox"] is NSNull, "\(empty)")
            #expect(empty["first_fix_at"] == nil)

            try await TripAPI.post(live, Array(points[60...]), apiKey: key)
            let trip = try await TripAPI.trip(live, "purged", apiKey: key)
            Self.expectMatches(trip, try await Self.recompute(live, trip, booking: "purged", device: staff.acme.device.id), "after the purge")
            #expect(trip["point_count"] as? Int == 60)
            #expect(isoDate(trip["first_fix_at"]) == points[60].time)
        }
    }
}
