import Foundation
import Testing
@testable import TrackingServer
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// POSTs that arrive together, of one tenant or several, are stored in one statement: every
/// request is answered after its commit, every fix reaches its tenant's stream exactly once in
/// seq order, and a request the database refuses fails alone.
@Suite("ingest group commit", .timeLimit(.minutes(3)))
struct IngestCoalescerTests {
    @Test("40 concurrent POSTs of 4 devices: all accepted, 40 events with contiguous seqs, each fix once")
    func concurrentPosts() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            var keys = [setup.apiKey]
            for n in 2...4 {
                keys.append(try await live.repository.createDevice(tenant: setup.tenant, name: "van-\(n)", group: "default", grade: 0).apiKey)
            }
            let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
            _ = try await stream.opening()
            try await withThrowingTaskGroup(of: Void.self) { group in
                for n in 0..<40 {
                    let key = keys[n % keys.count]
                    group.addTask { try await live.postPositions(Fixes.object(n), apiKey: key, expecting: 1) }
                }
                try await group.waitForAll()
            }
            var seqs: [Int64] = []
            var fixes = Set<Int>()
            for _ in 0..<40 {
                let event = try await stream.next("a posted fix")
                #expect(event.event == "location_update")
                seqs.append(try #require(event.seq))
                fixes.insert(try #require(try event.object().fixIndex))
            }
            #expect(seqs == Array(1...40))
            #expect(fixes == Set(0..<40))
        }
    }

    @Test("with fix filters on, requests stored in one group are each answered with their own outcome", arguments: ["flag", "drop"])
    func groupedOutcomesWithFilters(mode: String) async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            _ = try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await connection.query("UPDATE tenants SET filter_zero = true, filter_mode = \(mode) WHERE id = 'acme'",
                                           logger: TestCluster.logger)
            }
            let coalescer = IngestCoalescer(repository: live.repository)
            // Request n carries n % 3 fixes at (0,0) and two good ones; all are sent at once.
            let outcomes = try await withThrowingTaskGroup(of: (Int, IngestOutcome).self) { group in
                for n in 0..<12 {
                    let fixes = (0..<(n % 3 + 2)).map { k in
                        k < n % 3 ? ValidatedPosition(latitude: 0, longitude: 0, fixTime: Date())
                                  : ValidatedPosition(latitude: 52.5, longitude: 13.4 + Double(k) / 1_000, fixTime: Date())
                    }
                    group.addTask { (n, try await coalescer.insert(fixes, device: setup.device)) }
                }
                return try await group.reduce(into: [Int: IngestOutcome]()) { $0[$1.0] = $1.1 }
            }
            for (n, outcome) in outcomes {
                #expect(outcome.accepted == 2 && outcome.filtered == n % 3, "request \(n): \(outcome)")
                #expect(outcome.dropped == (mode == "drop" ? n % 3 : 0), "request \(n): \(outcome)")
            }
            let stored = try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await Fixes.count("SELECT count(*) FROM positions", on: connection)
            }
            #expect(stored == 24 + (mode == "drop" ? 0 : 12), "24 good fixes and 12 zero fixes")
        }
    }

    @Test("POSTs of three tenants in one group: each tenant's fixes get its own contiguous seqs and reach only its stream; filters judge only their tenant")
    func groupsAcrossTenants() async throws {
        try await LiveNode.run { live in
            let tenants = ["acme", "globex", "initech"]
            var devices: [DeviceIdentity] = []
            var streams: [SSEStream] = []
            for id in tenants {
                let setup = try await TestTenant.create(live.repository, id: id)
                devices.append(setup.device)
                let stream = try await live.stream("/api/v1/stream", apiKey: setup.apiKey)
                _ = try await stream.opening()
                streams.append(stream)
            }
            // Only globex drops fixes at (0,0).
            _ = try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await connection.query("UPDATE tenants SET filter_zero = true, filter_mode = 'drop' WHERE id = 'globex'",
                                           logger: TestCluster.logger)
            }
            // One writer, so the requests queue behind the first and go out together.
            let coalescer = IngestCoalescer(repository: live.repository, writers: 1)
            let posting = devices
            let outcomes = try await withThrowingTaskGroup(of: (Int, IngestOutcome).self) { group in
                for n in 0..<30 {
                    let tenant = n % 3
                    // Every request sends its fix number as the longitude, and globex's odd ones a (0,0) fix too.
                    var fixes = [ValidatedPosition(latitude: 52.5, longitude: Double(n) / 100, fixTime: Date())]
                    if tenant == 1 && n % 2 == 1 { fixes.append(ValidatedPosition(latitude: 0, longitude: 0, fixTime: Date())) }
                    group.addTask { (n, try await coalescer.insert(fixes, device: posting[tenant])) }
                }
                return try await group.reduce(into: [Int: IngestOutcome]()) { $0[$1.0] = $1.1 }
            }
            #expect(coalescer.stats.widestGroup > 1, "some group held more than one tenant: \(coalescer.stats)")
            #expect(coalescer.stats.groups < 30, "requests were grouped: \(coalescer.stats)")
            for (n, outcome) in outcomes {
                let zero = n % 3 == 1 && n % 2 == 1
                // (Drop mode reports dropped fixes by count only.)
                #expect(outcome == IngestOutcome(accepted: 1, filtered: zero ? 1 : 0, dropped: zero ? 1 : 0), "request \(n)")
            }
            for (index, stream) in streams.enumerated() {
                var seqs: [Int64] = []
                var longitudes = Set<Int>()
                for _ in 0..<10 {
                    let event = try await stream.next("a fix of \(tenants[index])")
                    #expect(event.event == "location_update")
                    seqs.append(try #require(event.seq))
                    let object = try event.object()
                    #expect(object["device_id"] as? String == devices[index].id.uuidString.lowercased())
                    longitudes.insert(Int(((try #require(object["longitude"] as? Double)) * 100).rounded()))
                }
                #expect(seqs == Array(1...10), "\(tenants[index]): its own seqs, contiguous")
                #expect(longitudes == Set(stride(from: index, to: 30, by: 3)), "\(tenants[index]): exactly its requests' fixes")
            }
        }
    }

    @Test("a group with a fix for a device that no longer exists: only that request fails, the others are stored")
    func failingRequestFailsAlone() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let coalescer = IngestCoalescer(repository: live.repository)
            let ghost = DeviceIdentity(id: UUID(), tenant: setup.tenant, name: "ghost", group: "default", grade: 0)
            let fix = ValidatedPosition(latitude: 52.5, longitude: 13.4, fixTime: Date())
            let outcomes = await withTaskGroup(of: (Bool, Bool).self) { group in
                for n in 0..<12 {
                    let device = n == 5 ? ghost : setup.device
                    group.addTask {
                        do {
                            return (n == 5, try await coalescer.insert([fix], device: device).accepted == 1)
                        } catch let error as APIError {
                            return (n == 5, error.status == 401 ? false : true)
                        } catch {
                            return (n == 5, true)
                        }
                    }
                }
                return await group.reduce(into: [(Bool, Bool)]()) { $0.append($1) }
            }
            check(outcomes.filter { $0.0 }.allSatisfy { !$0.1 }, "the ghost device's request fails with 401")
            check(outcomes.filter { !$0.0 }.allSatisfy { $0.1 }, "every other request is stored")
            let stored = try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await Fixes.count("SELECT count(*) FROM positions", on: connection)
            }
            #expect(stored == 11)
        }
    }

    @Test("small requests go through one writer in growing groups; a second writer runs only while enough rows wait")
    func secondWriterOnlyForManyRows() async throws {
        try await LiveNode.run { live in
            let setup = try await TestTenant.create(live.repository)
            let device = setup.device
            @Sendable func send(_ coalescer: IngestCoalescer, requests: Int, fixes: Int) async throws {
                try await withThrowingTaskGroup(of: Void.self) { group in
                    for r in 0..<requests {
                        let positions = (0..<fixes).map {
                            ValidatedPosition(latitude: 52.5, longitude: 13.4 + Double(r * fixes + $0) / 10_000, fixTime: Date())
                        }
                        group.addTask {
                            let outcome = try await coalescer.insert(positions, device: device)
                            #expect(outcome.accepted == fixes)
                        }
                    }
                    try await group.waitForAll()
                }
            }
            let small = IngestCoalescer(repository: live.repository, writers: 2, rowsPerExtraWriter: 64)
            try await send(small, requests: 40, fixes: 1)
            #expect(small.stats.mostWriters == 1, "40 one-fix requests never make 64 rows wait: \(small.stats)")
            #expect(small.stats.groups < 40, "they were grouped: \(small.stats)")

            let large = IngestCoalescer(repository: live.repository, writers: 2, rowsPerExtraWriter: 64)
            try await send(large, requests: 10, fixes: 100)
            #expect(large.stats.mostWriters == 2, "a 100-fix request waiting starts the second writer: \(large.stats)")

            let stored = try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await Fixes.count("SELECT count(*) FROM positions", on: connection)
            }
            #expect(stored == 40 + 1_000)
        }
    }
}
