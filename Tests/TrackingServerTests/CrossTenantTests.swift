import Foundation
import NIOCore
import NIOHTTP1
import PostgresNIO
import Synchronization
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// Tenant isolation over HTTP: acme's admin, and acme's device key, addressing globex's
/// devices, users, keys and bookings get exactly what a random id gets, learn nothing of
/// globex, change nothing of globex, and never see a globex position in a snapshot or stream.
@Suite("cross-tenant isolation over HTTP", .timeLimit(.minutes(3)))
struct CrossTenantTests {
    // MARK: Endpoints that take an id

    @Test("acme's admin addressing globex's device, key or user gets the 404 of a random id, and globex is unchanged")
    func adminAddressingForeignIDs() async throws {
        try await LiveNode.run { live in
            let world = try await CrossTenantWorld.create(live)
            let before = try await world.globexFingerprint(live)
            let admin = world.acmeAdmin.accessToken
            let probes = world.probes()
            for probe in probes {
                try await world.expectLikeMissing(live, probe, bearer: admin, status: 404, code: "not_found")
            }
            #expect(try await world.globexFingerprint(live) == before, "an acme request changed globex's rows")
            try await world.expectGlobexIntact(live)

            // The same endpoints on acme's own ids work, so the 404s above are not a mistyped route.
            try await world.expectAcmeControls(live)
            #expect(try await world.globexFingerprint(live) == before, "acme's own deletes changed globex's rows")
        }
    }

    @Test("acme's device key addressing globex's ids answers exactly as for a random id (404 for a position)")
    func deviceKeyAddressingForeignIDs() async throws {
        try await LiveNode.run { live in
            let world = try await CrossTenantWorld.create(live)
            let before = try await world.globexFingerprint(live)
            for probe in world.probes() {
                // A key may only read positions: everything else is 403 for any id, the position 404.
                let expected = probe.name.hasPrefix("GET position") ? (404, "not_found") : (403, "forbidden")
                try await world.expectLikeMissing(live, probe, apiKey: world.acme.apiKey, status: expected.0, code: expected.1)
            }
            // Control: the key reads its own device's position.
            let own = try await live.get("/api/v1/devices/\(world.acmeDevice)/position", apiKey: world.acme.apiKey)
            #expect(own.status == 200, "\(own.body)")
            #expect(try await world.globexFingerprint(live) == before, "an acme request changed globex's rows")
            try await world.expectGlobexIntact(live)
        }
    }

    @Test("auth endpoints: acme cannot log out globex's token, link globex's device, or list globex's users and devices")
    func authEndpoints() async throws {
        try await LiveNode.run { live in
            let world = try await CrossTenantWorld.create(live)
            let admin = world.acmeAdmin.accessToken
            let before = try await world.globexFingerprint(live)

            // Logout with globex's refresh token: the answer of a token that exists nowhere.
            let foreignLogout = try await live.post("/api/v1/auth/logout", bearer: admin,
                                                    json: #"{"refresh_token":"\#(world.globexAdmin.refreshToken)"}"#)
            let unknownLogout = try await live.post("/api/v1/auth/logout", bearer: admin,
                                                    json: #"{"refresh_token":"\#(RefreshToken.generate())"}"#)
            ValidationTests.expectError(foreignLogout, status: 422, code: "validation_failed", field: "refresh_token",
                                        "logout with globex's refresh token")
            #expect(scrubbed(foreignLogout.body) == scrubbed(unknownLogout.body), "\(foreignLogout.body) vs \(unknownLogout.body)")
            world.expectNoSecrets(foreignLogout.body, "logout with globex's token")

            // Registering an acme user linked to globex's device: the answer of a random device id.
            func register(_ device: String) async throws -> LiveNode.Reply {
                let email = "driver-\(UUID().uuidString.prefix(8).lowercased())@acme.example"
                return try await live.post("/api/v1/auth/register", bearer: admin, json: """
                    {"email":"\(email)","name":"Driver","password":"correct horse battery","role":"driver","device_id":"\(device)"}
                    """)
            }
            let foreignRegister = try await register(world.globexDevice)
            let unknownRegister = try await register(UUID().uuidString.lowercased())
            #expect(foreignRegister.status == unknownRegister.status && foreignRegister.status >= 400,
                    "register with globex's device: \(foreignRegister.status) \(foreignRegister.body)")
            #expect((try? foreignRegister.error()["code"] as? String) == (try? unknownRegister.error()["code"] as? String))
            #expect(scrubbed(foreignRegister.body) == scrubbed(unknownRegister.body), "\(foreignRegister.body) vs \(unknownRegister.body)")
            world.expectNoSecrets(foreignRegister.body, "register with globex's device")
            // Control: linking acme's own device works.
            let ownRegister = try await register(world.acmeDevice)
            #expect(ownRegister.status == 201, "\(ownRegister.body)")

            // Lists and profile show acme only.
            for path in ["/api/v1/users", "/api/v1/devices", "/api/v1/auth/profile"] {
                let reply = try await live.get(path, bearer: admin)
                #expect(reply.status == 200, "\(path): \(reply.body)")
                world.expectNoSecrets(reply.body, path)
                #expect(!reply.body.contains(world.globexDevice) && !reply.body.contains(world.globexAdmin.id.uuidString.lowercased()),
                        "\(path) lists a globex id: \(reply.body)")
            }
            let users = try await live.get("/api/v1/users", bearer: admin).object()["users"] as? [[String: Any]] ?? []
            #expect(users.count == 3, "acme's admin and viewer and the driver just registered: \(users)")
            let devices = try await live.get("/api/v1/devices", bearer: admin).object()["devices"] as? [[String: Any]] ?? []
            check(devices.compactMap { ($0["device_id"] as? String)?.lowercased() } == [world.acmeDevice])

            #expect(try await world.globexFingerprint(live) == before, "an acme request changed globex's rows")
            // Globex's login still works: its refresh token rotates.
            let rotated = try await live.post("/api/v1/auth/refresh", json: #"{"refresh_token":"\#(world.globexAdmin.refreshToken)"}"#)
            #expect(rotated.status == 200, "globex's refresh token stopped working: \(rotated.body)")
        }
    }

    // MARK: Snapshots and streams

    @Test("GET /api/v1/snapshot for acme never contains globex positions, also while globex posts")
    func snapshotWhileGlobexPosts() async throws {
        try await LiveNode.run { live in
            let world = try await CrossTenantWorld.create(live)
            let globexPosted = SharedCounter()
            let stop = SharedCounter()
            let globexKey = world.globex.apiKey
            let acmeHead = 2  // the set-up's two acme fixes
            try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask {
                    var n = 100
                    while stop.value == 0, n < 600 {
                        try await live.postPositions(CrossTenantWorld.globexFix(n), apiKey: globexKey, expecting: 1)
                        globexPosted.increment()
                        n += 1
                    }
                }
                defer { group.cancelAll() }
                // Start once globex is posting, so the snapshots overlap its writes.
                var waited = 0
                while globexPosted.value == 0, waited < 400 {
                    try await Task.sleep(for: .milliseconds(25))
                    waited += 1
                }
                #expect(globexPosted.value > 0, "globex never posted")
                for round in 0..<30 {
                    let reply = round.isMultiple(of: 2)
                        ? try await live.get("/api/v1/snapshot", bearer: world.acmeAdmin.accessToken)
                        : try await live.get("/api/v1/snapshot", apiKey: world.acme.apiKey)
                    #expect(reply.status == 200, "\(reply.body)")
                    world.expectNoSecrets(reply.body, "snapshot round \(round)")
                    let object = try reply.object()
                    let positions = object["positions"] as? [[String: Any]] ?? []
                    check(positions.compactMap { $0["device_id"] as? String } == [world.acmeDevice],
                            "round \(round): \(reply.body.prefix(400))")
                    #expect(object["seq"] as? Int == acmeHead, "acme's snapshot seq moved with globex's writes: \(object["seq"] ?? "nil")")
                }
                stop.increment()
                try await group.next()
            }
            let stored = try await TestDatabase.withConnection(live.databaseURL) { connection in
                try await Fixes.count("SELECT count(*)::int FROM positions WHERE tenant_id = 'globex'", on: connection)
            }
            #expect(stored == CrossTenantWorld.globexSetupFixes + globexPosted.value)
        }
    }

    @Test("acme's tenant streams (admin and device key) and their replay carry no globex event")
    func tenantStreamIgnoresGlobex() async throws {
        try await LiveNode.run { live in
            let world = try await CrossTenantWorld.create(live)
            let byAdmin = try await live.stream("/api/v1/stream", bearer: world.acmeAdmin.accessToken)
            let byKey = try await live.stream("/api/v1/stream", apiKey: world.acme.apiKey)
            let witness = try await live.stream("/api/v1/stream", bearer: world.globexAdmin.accessToken)
            for (stream, what) in [(byAdmin, "admin"), (byKey, "device key")] {
                let snapshot = try await stream.opening()
                #expect(snapshot.seq == 2, "acme's \(what) snapshot is at acme's head")
                world.expectNoSecrets(snapshot.data, "acme's \(what) snapshot")
                let devices = (try snapshot.object()["positions"] as? [[String: Any]] ?? []).compactMap { $0["device_id"] as? String }
                #expect(devices == [world.acmeDevice], "acme's \(what) snapshot: \(snapshot.data.prefix(400))")
            }
            let globexSnapshot = try await witness.opening()
            #expect(globexSnapshot.data.contains(world.globexDevice), "the witness sees globex's marker")

            // Globex posts a batch, removes its marker and posts again; its own stream sees all of it.
            try await live.postPositions("[" + (10..<15).map { CrossTenantWorld.globexFix($0) }.joined(separator: ",") + "]",
                                         apiKey: world.globex.apiKey, expecting: 5)
            let removal = try await live.delete("/api/v1/devices/\(world.globexDevice)/position", bearer: world.globexAdmin.accessToken)
            #expect(removal.status == 200, "\(removal.body)")
            try await live.postPositions(CrossTenantWorld.globexFix(20), apiKey: world.globex.apiKey, expecting: 1)
            let globexEvents = try await witness.collect(7)
            #expect(globexEvents.map(\.event) == Array(repeating: "location_update", count: 5) + ["removed", "location_update"])

            // Then acme posts: that fix must be the very next event on both acme streams.
            try await live.postPositions(Fixes.object(50, booking: CrossTenantWorld.acmeBooking), apiKey: world.acme.apiKey, expecting: 1)
            for (stream, what) in [(byAdmin, "admin"), (byKey, "device key")] {
                let event = try await stream.next("acme's own fix on the \(what) stream")
                world.expectAcmeEvent(event, fix: 50, "acme's \(what) stream")
                #expect(event.seq == 3, "acme's seqs count acme's events only: \(event.id ?? "nil")")
            }

            // A replay of acme's whole log is acme's three fixes.
            let replay = try await live.stream("/api/v1/stream", apiKey: world.acme.apiKey, lastEventID: "0")
            let replayed = try await replay.collect(through: 3)
            #expect(replayed.map(\.seq) == [1, 2, 3])
            for event in replayed { world.expectAcmeEvent(event, fix: nil, "acme's replay") }
        }
    }

    @Test("acme's stream of a booking only globex uses: empty snapshot, none of globex's events, then acme's own fix")
    func bookingUsedOnlyByGlobex() async throws {
        try await LiveNode.run { live in
            let world = try await CrossTenantWorld.create(live)
            let booking = CrossTenantWorld.globexBooking
            let path = "/api/v1/bookings/\(booking)/stream"
            let byAdmin = try await live.stream(path, bearer: world.acmeAdmin.accessToken)
            let byKey = try await live.stream(path, apiKey: world.acme.apiKey)
            let witness = try await live.stream(path, bearer: world.globexAdmin.accessToken)
            for (stream, what) in [(byAdmin, "admin"), (byKey, "device key")] {
                let snapshot = try await stream.opening()
                #expect(try snapshot.object()["positions"] as? [Any] != nil, "\(snapshot.data)")
                #expect((try snapshot.object()["positions"] as? [Any])?.isEmpty == true,
                        "acme's \(what) snapshot of globex's booking: \(snapshot.data.prefix(400))")
                #expect(snapshot.seq == 2, "acme's \(what) booking snapshot is at acme's head, not globex's")
                world.expectNoSecrets(snapshot.data, "acme's \(what) booking snapshot")
            }
            let globexSnapshot = try await witness.opening()
            #expect(globexSnapshot.data.contains(world.globexDevice), "the witness sees globex's booking")

            try await live.postPositions("[" + (30..<34).map { CrossTenantWorld.globexFix($0) }.joined(separator: ",") + "]",
                                         apiKey: world.globex.apiKey, expecting: 4)
            let globexEvents = try await witness.collect(4)
            check(globexEvents.allSatisfy { $0.data.contains(world.globexDevice) })

            // Now acme uses the same booking id: only that fix reaches acme.
            try await live.postPositions(Fixes.object(60, booking: booking), apiKey: world.acme.apiKey, expecting: 1)
            for (stream, what) in [(byAdmin, "admin"), (byKey, "device key")] {
                let event = try await stream.next("acme's fix on the \(what) booking stream")
                world.expectAcmeEvent(event, fix: 60, "acme's \(what) booking stream")
                #expect(event.seq == 3)
            }
            // Acme's replay of that booking: its one fix.
            let replay = try await live.stream(path, apiKey: world.acme.apiKey, lastEventID: "0")
            let replayed = try await replay.collect(through: 3)
            #expect(replayed.map(\.seq) == [3])
            for event in replayed { world.expectAcmeEvent(event, fix: 60, "acme's booking replay") }
        }
    }

    @Test("a booking id both tenants use stays apart, also after globex's last subscriber leaves it")
    func sharedBookingID() async throws {
        // Short heartbeats, so the node notices a closed stream quickly.
        try await LiveNode.run({ $0.heartbeatSeconds = 1 }) { live in
            let world = try await CrossTenantWorld.create(live)
            let booking = "order-1"
            try await live.postPositions(Fixes.object(70, booking: booking), apiKey: world.acme.apiKey, expecting: 1)
            try await live.postPositions(CrossTenantWorld.globexFix(70, booking: booking), apiKey: world.globex.apiKey, expecting: 1)
            let path = "/api/v1/bookings/\(booking)/stream"
            let acme = try await live.stream(path, bearer: world.acmeAdmin.accessToken)
            let globex = try await live.stream(path, bearer: world.globexAdmin.accessToken)
            let snapshot = try await acme.opening()
            let devices = (try snapshot.object()["positions"] as? [[String: Any]] ?? []).compactMap { $0["device_id"] as? String }
            #expect(devices == [world.acmeDevice], "acme's snapshot of the shared booking: \(snapshot.data.prefix(400))")
            world.expectNoSecrets(snapshot.data, "acme's snapshot of the shared booking")
            let globexSnapshot = try await globex.opening()
            let globexDevices = (try globexSnapshot.object()["positions"] as? [[String: Any]] ?? []).compactMap { $0["device_id"] as? String }
            #expect(globexDevices == [world.globexDevice])

            try await live.postPositions(CrossTenantWorld.globexFix(71, booking: booking), apiKey: world.globex.apiKey, expecting: 1)
            let fix71 = try await globex.next("globex's fix 71")
            #expect(fix71.data.contains(world.globexDevice))
            try await live.postPositions(Fixes.object(72, booking: booking), apiKey: world.acme.apiKey, expecting: 1)
            let fix72 = try await acme.next("acme's fix 72")
            world.expectAcmeEvent(fix72, fix: 72, "the shared booking")

            // Globex leaves: the channel both share must stay live for acme.
            let subscribersBefore = try await live.health()["subscribers"] as? Int ?? 0
            await globex.close()
            _ = try await live.health(until: { ($0["subscribers"] as? Int ?? 0) == subscribersBefore - 1 })
            try await live.postPositions(CrossTenantWorld.globexFix(73, booking: booking), apiKey: world.globex.apiKey, expecting: 1)
            try await live.postPositions(Fixes.object(74, booking: booking), apiKey: world.acme.apiKey, expecting: 1)
            let fix74 = try await acme.next("acme's fix 74 after globex left")
            world.expectAcmeEvent(fix74, fix: 74, "the shared booking after globex left")
        }
    }
}

// MARK: - The two tenants

/// acme and globex, each with an admin, a device with positions in a booking; globex also has
/// a viewer (a user acme's admin could try to delete) and a second device key.
private struct CrossTenantWorld: Sendable {
    let acme: TestTenant
    let globex: TestTenant
    let acmeAdmin: TestUser
    let acmeViewer: TestUser
    let globexAdmin: TestUser
    let globexViewer: TestUser
    let globexKeyID: String

    static let globexDeviceName = "globex-zeppelin-77"
    static let acmeBooking = "acme-order-1"
    static let globexBooking = "zep-order-9"
    static let globexSetupFixes = 3

    var acmeDevice: String { acme.device.id.uuidString.lowercased() }
    var globexDevice: String { globex.device.id.uuidString.lowercased() }

    /// A globex fix far from acme's (Sydney, not Berlin), so a leaked coordinate is recognisable.
    static func globexFix(_ n: Int, booking: String? = globexBooking) -> String {
        Fixes.object(n, booking: booking, overriding: [
            "latitude": "\(-33.86 - Double(n % 1_000) * 0.0001)",
            "longitude": "\(151.2 + Double(n / 1_000) * 0.0001)",
        ])
    }

    static func create(_ live: LiveNode) async throws -> CrossTenantWorld {
        let acme = try await TestTenant.create(live.repository, id: "acme", deviceName: "acme-van")
        let globex = try await TestTenant.create(live.repository, id: "globex", deviceName: globexDeviceName)
        let acmeAdmin = try await live.user(.admin, in: acme.tenant)
        let acmeViewer = try await live.user(.viewer, in: acme.tenant)
        let globexAdmin = try await live.user(.admin, in: globex.tenant)
        let globexViewer = try await live.user(.viewer, in: globex.tenant)
        try await live.postPositions(Fixes.array(1..<3, booking: acmeBooking), apiKey: acme.apiKey, expecting: 2)
        try await live.postPositions("[" + (1...globexSetupFixes).map { globexFix($0) }.joined(separator: ",") + "]",
                                     apiKey: globex.apiKey, expecting: globexSetupFixes)
        // A second globex key (the first keeps working), so there is a key id to aim at.
        let created = try await live.post("/api/v1/devices/\(globex.device.id.uuidString.lowercased())/keys",
                                          bearer: globexAdmin.accessToken, json: #"{"keep_existing":true}"#)
        guard created.status == 201, let key = try created.object()["key"] as? [String: Any], let keyID = key["key_id"] as? String else {
            throw SSEClientError(description: "creating globex's second key answered \(created.status): \(created.body)")
        }
        return CrossTenantWorld(acme: acme, globex: globex, acmeAdmin: acmeAdmin, acmeViewer: acmeViewer,
                                globexAdmin: globexAdmin, globexViewer: globexViewer, globexKeyID: keyID.lowercased())
    }

    /// What must never appear in a reply to acme.
    var secrets: [String] {
        [Self.globexDeviceName, "globex", "-33.86", "151.2", globexAdmin.email, globexViewer.email]
    }

    func expectNoSecrets(_ text: String, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        for secret in secrets where text.contains(secret) {
            Issue.record("\(what) reveals globex's \(secret): \(text.prefix(400))", sourceLocation: sourceLocation)
        }
    }

    /// An event of acme's device (and, with `fix`, that fix), with nothing of globex in it.
    func expectAcmeEvent(_ event: SSEParser.Event, fix: Int?, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
        expectNoSecrets(event.data, what, sourceLocation: sourceLocation)
        guard let object = try? event.object() else {
            Issue.record("\(what): \(event.event) is not JSON: \(event.data.prefix(200))", sourceLocation: sourceLocation)
            return
        }
        #expect(event.event == "location_update", "\(what): \(event.event) \(event.data.prefix(200))", sourceLocation: sourceLocation)
        #expect(object["device_id"] as? String == acmeDevice, "\(what): \(event.data.prefix(300))", sourceLocation: sourceLocation)
        if let fix {
            #expect(object.fixIndex == fix, "\(what): expected fix \(fix), got \(event.data.prefix(300))", sourceLocation: sourceLocation)
        }
    }

    // MARK: Probes

    /// One request addressing globex's resource, and the same request with random ids.
    struct Probe: Sendable {
        let name: String
        let method: HTTPMethod
        let foreign: String
        let missing: String
        let body: String?
    }

    func probes() -> [Probe] {
        let device = globexDevice
        let user = globexViewer.id.uuidString.lowercased()
        let admin = globexAdmin.id.uuidString.lowercased()
        func random() -> String { UUID().uuidString.lowercased() }
        let scope = #"{"groups":{"default":{"max_grade":0}}}"#
        return [
            Probe(name: "GET device", method: .GET, foreign: "/api/v1/devices/\(device)", missing: "/api/v1/devices/\(random())", body: nil),
            Probe(name: "GET position", method: .GET, foreign: "/api/v1/devices/\(device)/position",
                  missing: "/api/v1/devices/\(random())/position", body: nil),
            Probe(name: "GET keys", method: .GET, foreign: "/api/v1/devices/\(device)/keys",
                  missing: "/api/v1/devices/\(random())/keys", body: nil),
            // Without a body a new key revokes every other one: the most damaging form.
            Probe(name: "POST keys", method: .POST, foreign: "/api/v1/devices/\(device)/keys",
                  missing: "/api/v1/devices/\(random())/keys", body: nil),
            Probe(name: "POST keys keep_existing", method: .POST, foreign: "/api/v1/devices/\(device)/keys",
                  missing: "/api/v1/devices/\(random())/keys", body: #"{"keep_existing":true}"#),
            Probe(name: "DELETE key", method: .DELETE, foreign: "/api/v1/devices/\(device)/keys/\(globexKeyID)",
                  missing: "/api/v1/devices/\(random())/keys/\(random())", body: nil),
            Probe(name: "DELETE globex key via acme device", method: .DELETE,
                  foreign: "/api/v1/devices/\(acmeDevice)/keys/\(globexKeyID)",
                  missing: "/api/v1/devices/\(acmeDevice)/keys/\(random())", body: nil),
            Probe(name: "DELETE position", method: .DELETE, foreign: "/api/v1/devices/\(device)/position",
                  missing: "/api/v1/devices/\(random())/position", body: nil),
            Probe(name: "POST purge", method: .POST, foreign: "/api/v1/devices/\(device)/purge",
                  missing: "/api/v1/devices/\(random())/purge", body: nil),
            Probe(name: "GET user", method: .GET, foreign: "/api/v1/users/\(user)", missing: "/api/v1/users/\(random())", body: nil),
            Probe(name: "GET admin user", method: .GET, foreign: "/api/v1/users/\(admin)", missing: "/api/v1/users/\(random())", body: nil),
            Probe(name: "PUT scope", method: .PUT, foreign: "/api/v1/users/\(user)/scope",
                  missing: "/api/v1/users/\(random())/scope", body: scope),
            Probe(name: "PUT scope (clear)", method: .PUT, foreign: "/api/v1/users/\(admin)/scope",
                  missing: "/api/v1/users/\(random())/scope", body: "null"),
            Probe(name: "DELETE user", method: .DELETE, foreign: "/api/v1/users/\(user)", missing: "/api/v1/users/\(random())", body: nil),
            Probe(name: "DELETE admin user", method: .DELETE, foreign: "/api/v1/users/\(admin)",
                  missing: "/api/v1/users/\(random())", body: nil),
            Probe(name: "DELETE device", method: .DELETE, foreign: "/api/v1/devices/\(device)",
                  missing: "/api/v1/devices/\(random())", body: nil),
        ]
    }

    /// The foreign request answers `status`/`code`, exactly like the missing one apart from the
    /// ids each names, and reveals nothing of globex.
    func expectLikeMissing(_ live: LiveNode, _ probe: Probe, apiKey: String? = nil, bearer: String? = nil,
                           status: Int, code: String, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let body = probe.body.map { ByteBuffer(string: $0) }
        let foreign = try await live.request(probe.method, probe.foreign, apiKey: apiKey, bearer: bearer, body: body)
        let missing = try await live.request(probe.method, probe.missing, apiKey: apiKey, bearer: bearer, body: body)
        let who = apiKey != nil ? "acme's device key" : "acme's admin"
        ValidationTests.expectError(missing, status: status, code: code, "\(who), \(probe.name), random id", sourceLocation: sourceLocation)
        ValidationTests.expectError(foreign, status: status, code: code, "\(who), \(probe.name), globex's id", sourceLocation: sourceLocation)
        #expect(scrubbed(foreign.body) == scrubbed(missing.body),
                "\(who), \(probe.name): globex's id answers \(foreign.body) but a random id \(missing.body)", sourceLocation: sourceLocation)
        expectNoSecrets(foreign.body, "\(who), \(probe.name)", sourceLocation: sourceLocation)
    }

    /// The same endpoints on acme's own ids succeed (the destructive ones last).
    func expectAcmeControls(_ live: LiveNode) async throws {
        let token = acmeAdmin.accessToken
        let device = acmeDevice
        let viewer = acmeViewer.id.uuidString.lowercased()
        func expect(_ reply: LiveNode.Reply, _ status: Int, _ what: String, sourceLocation: SourceLocation = #_sourceLocation) {
            #expect(reply.status == status, "control \(what) on acme's own id: \(reply.status) \(reply.body.prefix(300))",
                    sourceLocation: sourceLocation)
        }
        expect(try await live.get("/api/v1/devices/\(device)", bearer: token), 200, "GET device")
        expect(try await live.get("/api/v1/devices/\(device)/position", bearer: token), 200, "GET position")
        expect(try await live.get("/api/v1/devices/\(device)/keys", bearer: token), 200, "GET keys")
        let created = try await live.post("/api/v1/devices/\(device)/keys", bearer: token, json: #"{"keep_existing":true}"#)
        expect(created, 201, "POST keys")
        let keyID = try #require((try created.object()["key"] as? [String: Any])?["key_id"] as? String)
        expect(try await live.delete("/api/v1/devices/\(device)/keys/\(keyID)", bearer: token), 200, "DELETE key")
        expect(try await live.get("/api/v1/users/\(viewer)", bearer: token), 200, "GET user")
        expect(try await live.put("/api/v1/users/\(viewer)/scope", bearer: token, json: #"{"groups":{"default":{"max_grade":0}}}"#),
               200, "PUT scope")
        expect(try await live.delete("/api/v1/users/\(viewer)", bearer: token), 200, "DELETE user")
        expect(try await live.delete("/api/v1/devices/\(device)/position", bearer: token), 200, "DELETE position")
        expect(try await live.request(.POST, "/api/v1/devices/\(device)/purge", bearer: token), 200, "POST purge")
        expect(try await live.request(.POST, "/api/v1/devices/\(device)/keys", bearer: token), 201, "POST keys (revoking others)")
        expect(try await live.delete("/api/v1/devices/\(device)", bearer: token), 200, "DELETE device")
    }

    // MARK: Globex's rows

    /// A digest of every globex row of every tenant-owned table, read as the owner.
    func globexFingerprint(_ live: LiveNode) async throws -> [String: String] {
        try await TestDatabase.withConnection(live.databaseURL) { connection in
            var digests: [String: String] = [:]
            let tables = [("tenants", "id"), ("devices", "tenant_id"), ("device_api_keys", "tenant_id"), ("users", "tenant_id"),
                          ("refresh_tokens", "tenant_id"), ("positions", "tenant_id"), ("latest_positions", "tenant_id"),
                          ("change_log", "tenant_id"), ("change_log_heads", "tenant_id")]
            for (table, column) in tables {
                let rows = try await connection.query("""
                    SELECT count(*) || ':' || coalesce(md5(string_agg(x::text, '|' ORDER BY x::text)), '')
                      FROM \(unescaped: table) x WHERE \(unescaped: column) = 'globex'
                    """, logger: TestCluster.logger)
                for try await digest in rows.decode(String.self) { digests[table] = digest }
            }
            return digests
        }
    }

    /// Globex's device, keys, marker, history and users are all there and working.
    func expectGlobexIntact(_ live: LiveNode, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let facts = try await TestDatabase.withConnection(live.databaseURL) { connection in
            try await Fixes.count("""
                SELECT ((SELECT count(*) FROM devices WHERE id = \(globex.device.id) AND name = \(Self.globexDeviceName)) * 10000
                      + (SELECT count(*) FROM device_api_keys WHERE device_id = \(globex.device.id) AND revoked_at IS NULL) * 1000
                      + (SELECT count(*) FROM latest_positions WHERE device_id = \(globex.device.id)) * 100
                      + (SELECT count(*) FROM positions WHERE device_id = \(globex.device.id)) * 10
                      + (SELECT count(*) FROM users WHERE tenant_id = 'globex' AND scope IS NULL AND scope_version = 1))::int
                """, on: connection)
        }
        // 1 device, 2 active keys, 1 marker, 3 fixes, 2 users with no scope.
        #expect(facts == 12_132, "globex's device/keys/marker/history/users: \(facts)", sourceLocation: sourceLocation)
        let own = try await live.get("/api/v1/devices/\(globexDevice)", bearer: globexAdmin.accessToken)
        #expect(own.status == 200 && own.body.contains(Self.globexDeviceName), "globex reads its device: \(own.body)",
                sourceLocation: sourceLocation)
        let position = try await live.get("/api/v1/devices/\(globexDevice)/position", apiKey: globex.apiKey)
        #expect(position.status == 200, "globex reads its marker: \(position.body)", sourceLocation: sourceLocation)
    }
}

/// A counter shared between a test and a task it runs.
private final class SharedCounter: Sendable {
    private let count = Atomic<Int>(0)
    var value: Int { count.load(ordering: .acquiring) }
    func increment() { count.add(1, ordering: .acquiringAndReleasing) }
}

/// A body with every UUID replaced, so two error replies compare apart from the ids they name.
private func scrubbed(_ body: String) -> String {
    body.replacingOccurrences(of: "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                              with: "<id>", options: .regularExpression)
}
