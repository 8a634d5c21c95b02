import Foundation
import PostgresNIO
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Rollups are a continuous aggregate kept from the change log: after any mix of live appends,
/// out-of-order batches, late fixes and purges they equal an aggregation done from scratch.
@Suite("rollups", .timeLimit(.minutes(3)))
struct RollupTests {
    @Test("hourly and daily rollups equal a from-scratch aggregation after appends, out-of-order batches and late fixes")
    func equalFromScratch() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let acme = try await TestTenant.create(repository)
            let (other, _) = try await repository.createDevice(tenant: acme.tenant, name: "van-2", group: "default", grade: 0)
            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            // Two days ago from 23:00 to past midnight, so hours and a day boundary are crossed.
            let start = TimeSeries.midnight(-2).addingTimeInterval(23 * 3_600)
            let first = TimeSeries.track(device: acme.device.id, start: start, count: 700, seed: 7)
            let second = TimeSeries.track(device: other.id, start: start.addingTimeInterval(600), count: 400, step: 11,
                                          seed: 9, longitude: 13.1)

            // Live appends in chunks, refreshed between them (the extend path).
            for chunk in stride(from: 0, to: 500, by: 100) {
                try await TimeSeries.insert(Array(first[chunk..<chunk + 100]), client: client)
                try await TimeSeries.insert(Array(second[(chunk * 4 / 5)..<((chunk + 100) * 4 / 5)]), client: client)
                _ = try await maintenance.run(daysBack: 30, daysAhead: 7)
                #expect(try await TimeSeries.hourlyMismatches(client) == [])
            }
            // The rest arrives shuffled in small batches, some fixes landing between stored ones
            // of earlier hours and one duplicate timestamp.
            var random = SeededGenerator(state: 3)
            var late = Array(first[500...]) + Array(second[400...])
            for i in stride(from: late.count - 1, to: 0, by: -1) { late.swapAt(i, Int(random.next() % UInt64(i + 1))) }
            let wedged = first[120...].prefix(5).map {
                TimeSeries.Fix(device: $0.device, time: $0.time.addingTimeInterval(2), latitude: $0.latitude + 0.001,
                               longitude: $0.longitude, speed: 3, heading: nil)
            }
            let duplicate = [first[300]]
            for batch in stride(from: 0, to: late.count, by: 37) {
                try await TimeSeries.insert(Array(late[batch..<min(batch + 37, late.count)]), client: client)
            }
            try await TimeSeries.insert(wedged + duplicate, client: client)
            _ = try await maintenance.run(daysBack: 30, daysAhead: 7)

            #expect(try await TimeSeries.hourlyMismatches(client) == [])
            #expect(try await TimeSeries.dailyMismatches(client) == [])
            let hours = try await client.value("SELECT count(*) FROM rollup_device_hourly", as: Int.self)
            #expect(hours >= 4, "the track spans several hours: \(hours)")
            #expect(try await client.value("SELECT count(DISTINCT day) FROM rollup_device_daily", as: Int.self) == 2)
            let points = try await client.value("SELECT sum(points)::bigint FROM rollup_device_daily", as: Int64.self)
            #expect(points == Int64(first.count + second.count + wedged.count + duplicate.count))
        }
    }

    @Test("a late fix for yesterday corrects yesterday's hour and day; the watermark moves to the head")
    func lateFixCorrectsYesterday() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let acme = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            let yesterday = TimeSeries.midnight(-1).addingTimeInterval(10 * 3_600)
            let track = TimeSeries.track(device: acme.device.id, start: yesterday, count: 200, seed: 11)
            try await TimeSeries.insert(Array(track[..<100]) + Array(track[101...]), client: client)
            // Today's fixes too, so the late one is not the newest.
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: TimeSeries.midnight(0), count: 20),
                                        client: client)
            _ = try await maintenance.run(daysBack: 30, daysAhead: 7)
            let before = try await client.value("""
                SELECT points FROM rollup_device_daily WHERE day = (now() AT TIME ZONE 'UTC')::date - 1
                """, as: Int.self)
            #expect(before == 199)

            try await TimeSeries.insert([track[100]], client: client)
            let report = try await maintenance.run(daysBack: 30, daysAhead: 7)
            #expect(report.ran)
            #expect(report.rollups.map(\.hoursRefreshed) == [1])
            let after = try await client.value("""
                SELECT points FROM rollup_device_daily WHERE day = (now() AT TIME ZONE 'UTC')::date - 1
                """, as: Int.self)
            #expect(after == 200)
            #expect(try await TimeSeries.hourlyMismatches(client) == [])
            #expect(try await TimeSeries.dailyMismatches(client) == [])
            let (head, mark) = try await client.query("""
                SELECT h.last_seq, w.last_seq FROM change_log_heads h JOIN rollup_watermarks w USING (tenant_id)
                """, logger: TestCluster.logger).decode((Int64, Int64).self).first { _ in true }!
            #expect(head == mark)
        }
    }

    @Test("a purge removes the device's rollups; fixes after it start new ones")
    func purgeRemovesRollups() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            let repository = TrackingRepository(client: client, logger: TestCluster.logger)
            let acme = try await TestTenant.create(repository)
            let maintenance = Maintenance(client: client, logger: TestCluster.logger)
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: TimeSeries.midnight(-3), count: 50),
                                        client: client)
            _ = try await maintenance.run(daysBack: 30, daysAhead: 7)
            #expect(try await client.value("SELECT count(*) FROM rollup_device_hourly", as: Int.self) > 0)

            try await client.run("SELECT pgtrack_purge_device('acme', \(acme.device.id))")
            try await TimeSeries.insert(TimeSeries.track(device: acme.device.id, start: TimeSeries.midnight(0), count: 5),
                                        client: client)
            _ = try await maintenance.run(daysBack: 30, daysAhead: 7)
            #expect(try await TimeSeries.hourlyMismatches(client) == [])
            #expect(try await TimeSeries.dailyMismatches(client) == [])
            #expect(try await client.value("SELECT sum(points)::bigint FROM rollup_device_daily", as: Int64.self) == 5)
        }
    }

    @Test("only one node refreshes at a time: a second pass while the lock is held does nothing")
    func oneNodeAtATime() async throws {
        // Failed once in a full fresh-clone run with an undescribed PSQLError; not reproduced alone.
        try await revealingDatabaseErrors { try await oneNodeAtATimeBody() }
    }

    private func oneNodeAtATimeBody() async throws {
        let url = try await TestCluster.freshDatabase()
        try await TestCluster.withClient(url) { client in
            _ = try await TestTenant.create(TrackingRepository(client: client, logger: TestCluster.logger))
            let holder = try await TestCluster.connect(url)
            defer { Task { try? await holder.close() } }
            for try await _ in try await holder.query("SELECT pg_advisory_lock(hashtext('pgtrack.maintenance'))",
                                                      logger: TestCluster.logger) {}
            let blocked = try await Maintenance(client: client, logger: TestCluster.logger).run(daysBack: 30, daysAhead: 7)
            #expect(!blocked.ran)
            for try await _ in try await holder.query("SELECT pg_advisory_unlock(hashtext('pgtrack.maintenance'))",
                                                      logger: TestCluster.logger) {}
            let free = try await Maintenance(client: client, logger: TestCluster.logger).run(daysBack: 30, daysAhead: 7)
            #expect(free.ran)
        }
    }
}
