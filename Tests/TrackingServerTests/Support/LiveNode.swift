import PostgresNIO
import AsyncHTTPClient
import Foundation
import Hummingbird
import HummingbirdTesting
import NIOCore
import NIOHTTP1
import Synchronization
import Testing
import TrackingCore
import TrackingServer
import TrackingStore
import TrackingTestSupport

/// A pgtrack node running for real on a fresh database, with an HTTP client pointed at it.
struct LiveNode: Sendable {
    let http: HTTPClient
    let port: Int
    let node: TrackingNode
    let databaseURL: DatabaseURL
    private let streams: StreamRegistry

    var base: String { "http://127.0.0.1:\(port)" }
    var repository: TrackingRepository { node.repository }

    /// Builds the application on a fresh migrated database, serves it on a free port, runs
    /// `body`, then closes every stream `body` opened and shuts the client down.
    /// `database`: a migrated database of the test's own (a private cluster it stops and starts).
    static func run(
        database: DatabaseURL? = nil,
        _ configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: @Sendable (LiveNode) async throws -> Void
    ) async throws {
        let url: DatabaseURL
        if let database { url = database } else { url = try await TestCluster.freshDatabase() }
        var configuration = ServerConfiguration(port: 0, bcryptCost: 4)
        configure(&configuration)
        let (app, node) = try await buildApplication(
            configuration: configuration,
            database: DatabaseConnectionSettings(url: url, maximumConnections: 10),
            logger: TestCluster.logger)
        // The body's failure comes back as a value, not thrown through `app.test`: an error
        // thrown there leaves HummingbirdTesting's task group and *cancels* the node's service
        // group instead of shutting it down in order. The pool's run() then ends while the
        // server still drains requests, requests waiting for a connection (or for a shared
        // snapshot query waiting for one) never get it, and the test hung for ever instead of
        // failing (seen as a stalled full run: a node with connections in CLOSE-WAIT and no
        // database sessions at all).
        let outcome: Result<Void, any Error> = try await app.test(.live) { client in
            let port = try #require(client.port)
            var pool = HTTPClient.Configuration.ConnectionPool(idleTimeout: .seconds(30))
            pool.concurrentHTTP1ConnectionsPerHostSoftLimit = 64
            // The connect timeout is also how long a request may wait for one of the 64
            // connections: 200 simultaneous requests on a machine busy with the whole suite
            // waited longer than 10 s (getConnectionFromPoolTimeout in a CI run), and a later
            // CI run had requests that took over 20 s in all. Each request's own deadline
            // (`request(timeout:)`) bounds it; a request that never gets an answer still fails
            // the test at its time limit.
            let http = HTTPClient(eventLoopGroupProvider: .singleton,
                                  configuration: .init(timeout: .init(connect: .seconds(120)), connectionPool: pool))
            let live = LiveNode(http: http, port: port, node: node, databaseURL: url, streams: StreamRegistry())
            let outcome: Result<Void, any Error>
            do {
                try await body(live)
                outcome = .success(())
            } catch {
                outcome = .failure(error)
            }
            await live.streams.closeAll()
            try? await http.shutdown()
            return outcome
        }
        try outcome.get()
    }

    // MARK: Streams

    /// Opens an SSE stream on `path`; headers and query are passed as given. Its response head
    /// may take 60 s: the fresh-clone CI run of 8de9a6f waited more than 20 s for one of 20
    /// streams opened at once beside the whole suite (SnapshotTests' joiners). A head that
    /// never comes still fails, and the suites' 3-minute limits stand.
    func stream(_ path: String, apiKey: String? = nil, bearer: String? = nil, lastEventID: String? = nil,
                keepAlive: Bool = false, headTimeout: Duration = .seconds(60)) async throws -> SSEStream {
        var headers: [(String, String)] = []
        if let apiKey { headers.append(("X-API-Key", apiKey)) }
        if let bearer { headers.append(("Authorization", "Bearer \(bearer)")) }
        if let lastEventID { headers.append(("Last-Event-ID", lastEventID)) }
        let stream = try await SSEStream.open(http, url: base + path, headers: headers, keepAlive: keepAlive, timeout: headTimeout)
        streams.add(stream)
        return stream
    }

    // MARK: Plain requests

    struct Reply: Sendable {
        let status: Int
        let body: String
        var headers: HTTPHeaders = [:]

        func object() throws -> [String: Any] {
            guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8)) as? [String: Any] else {
                throw SSEClientError(description: "HTTP \(status) body is not a JSON object: \(body.prefix(300))")
            }
            return object
        }

        /// The `error` object of an error reply.
        func error() throws -> [String: Any] {
            guard let error = try object()["error"] as? [String: Any] else {
                throw SSEClientError(description: "HTTP \(status) body has no error object: \(body.prefix(300))")
            }
            return error
        }
    }

    func request(_ method: HTTPMethod, _ path: String, apiKey: String? = nil, bearer: String? = nil, body: ByteBuffer? = nil,
                 headers: [(String, String)] = [], timeout: TimeAmount = .seconds(20)) async throws -> Reply {
        var request = HTTPClientRequest(url: base + path)
        request.method = method
        if let apiKey { request.headers.add(name: "X-API-Key", value: apiKey) }
        if let bearer { request.headers.add(name: "Authorization", value: "Bearer \(bearer)") }
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        }
        let response = try await http.execute(request, timeout: timeout)
        let bytes = try await response.body.collect(upTo: 4 << 20)
        return Reply(status: Int(response.status.code), body: String(buffer: bytes), headers: response.headers)
    }

    func get(_ path: String, apiKey: String? = nil, bearer: String? = nil, timeout: TimeAmount = .seconds(20)) async throws -> Reply {
        try await request(.GET, path, apiKey: apiKey, bearer: bearer, timeout: timeout)
    }

    func post(_ path: String, apiKey: String? = nil, bearer: String? = nil, json: String) async throws -> Reply {
        try await request(.POST, path, apiKey: apiKey, bearer: bearer, body: ByteBuffer(string: json))
    }

    func put(_ path: String, bearer: String?, json: String) async throws -> Reply {
        try await request(.PUT, path, bearer: bearer, body: ByteBuffer(string: json))
    }

    func delete(_ path: String, apiKey: String? = nil, bearer: String? = nil) async throws -> Reply {
        try await request(.DELETE, path, apiKey: apiKey, bearer: bearer)
    }

    // MARK: Users

    /// Creates a user in `tenant` (through the same registration as the API) and logs them in.
    func user(_ role: Role, in tenant: TenantID, email: String? = nil, device: UUID? = nil,
              scope: VisibilityScope? = nil) async throws -> TestUser {
        let email = email ?? "\(role.rawValue)-\(UUID().uuidString.prefix(8).lowercased())@example.com"
        let password = "correct horse battery"
        let record = try await node.registration.register(
            UserInput(email: email, name: role.rawValue.capitalized, password: password, role: role.rawValue,
                      deviceID: device, scope: scope?.json),
            tenant: tenant)
        let login = try await post("/api/v1/auth/login",
                                   json: #"{"tenant":"\#(tenant.rawValue)","email":"\#(email)","password":"\#(password)"}"#)
        guard login.status == 200, let object = try? login.object(), let access = object["access_token"] as? String,
              let refresh = object["refresh_token"] as? String else {
            throw SSEClientError(description: "login of \(email) answered \(login.status): \(login.body.prefix(300))")
        }
        return TestUser(record: record, email: email, password: password, accessToken: access, refreshToken: refresh)
    }

    /// Posts positions and requires `202 {"accepted": n}`.
    /// `batches` POSTs of `size` fixes numbered 0, 1, 2…, each fix with 6 KB of attributes: far
    /// more bytes than socket buffers hold, for tests of a client that stops reading.
    func postPaddedBatches(_ batches: Int, of size: Int, apiKey: String) async throws {
        let padding = String(repeating: "x", count: 6_000)
        for batch in 0..<batches {
            let fixes = (batch * size..<(batch + 1) * size).map {
                Fixes.object($0, overriding: ["attributes": #"{"i":\#($0),"pad":"\#(padding)"}"#])
            }
            try await postPositions("[" + fixes.joined(separator: ",") + "]", apiKey: apiKey, expecting: size)
        }
    }

    func postPositions(_ json: String, apiKey: String, expecting count: Int) async throws {
        let reply = try await post("/api/v1/locations", apiKey: apiKey, json: json)
        guard reply.status == 202, try reply.object()["accepted"] as? Int == count else {
            throw SSEClientError(description: "POST /api/v1/locations answered \(reply.status): \(reply.body.prefix(300))")
        }
    }

    /// Polls `/health` until `condition` holds (bounded) and returns the last report.
    /// 60 s by default, for the reason RawConnection.waitBytes gives.
    /// Runs one statement on a connection of its own, as another program speaking SQL would.
    func sql(_ query: PostgresQuery) async throws {
        _ = try await TestDatabase.withConnection(databaseURL) { connection in
            try await connection.query(query, logger: TestCluster.logger)
        }
    }

    func health(until condition: ([String: Any]) -> Bool = { _ in true }, timeout: Duration = .seconds(60)) async throws -> [String: Any] {
        let deadline = ContinuousClock.now + timeout
        while true {
            let report = try await get("/health").object()
            if condition(report) { return report }
            if ContinuousClock.now >= deadline {
                throw SSEClientError(description: "/health did not reach the expected state within \(timeout): \(report)")
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// A user created and logged in by a test.
struct TestUser: Sendable {
    let record: UserRecord
    let email: String
    let password: String
    let accessToken: String
    let refreshToken: String

    var id: UUID { record.id }
}

/// Streams a test opened, so they are closed even when the test fails.
final class StreamRegistry: Sendable {
    private let streams = Mutex<[SSEStream]>([])

    func add(_ stream: SSEStream) {
        streams.withLock { $0.append(stream) }
    }

    func closeAll() async {
        for stream in streams.withLock({ $0 }) { await stream.close() }
    }
}
