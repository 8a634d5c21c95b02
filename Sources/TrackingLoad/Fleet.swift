import AsyncHTTPClient
import Foundation
import Logging
import NIOCore
import TrackingCore
import TrackingServer
import TrackingStore

/// The tenants, devices, bookings and viewer logins of one simulation run. Tenants, devices
/// and each tenant's admin are created through the admin command's code paths (the
/// repository and UserRegistration); bookings are accepted and logins made over the HTTP API.
public struct Fleet: Sendable {
    public struct Driver: Sendable {
        public let index: Int
        public let tenant: String
        public let deviceID: UUID
        public let apiKey: String
        public var booking: String?
    }

    public struct Tenant: Sendable {
        public let id: String
        public let drivers: [Int]
        public var token: String
    }

    public var tenants: [Tenant]
    public var drivers: [Driver]

    /// A short random tag keeps the ids of repeated runs against one database apart.
    public static func makeTag() -> String {
        String(UInt64.random(in: 0..<(1 << 40)), radix: 36)
    }

    /// Creates `tenantCount` tenants with `driverCount` devices spread evenly, one admin per tenant.
    public static func provision(repository: TrackingRepository, tag: String, tenantCount: Int, driverCount: Int,
                                 password: String) async throws -> Fleet {
        let registration = UserRegistration(repository: repository, bcryptCost: 6)
        var tenants: [Tenant] = []
        for t in 0..<tenantCount {
            let id = "sim-\(tag)-\(t)"
            guard let tenant = TenantID(id) else { throw LoadError.invalid("bad tenant id \(id)") }
            try await repository.createTenant(id: tenant, name: "Simulated tenant \(t)")
            _ = try await registration.register(
                UserInput(email: "viewer@\(id).sim.test", name: "Simulated viewer", password: password, role: "admin"), tenant: tenant)
            tenants.append(Tenant(id: id, drivers: [], token: ""))
        }
        let assignments = (0..<driverCount).map { ($0, tenants[$0 % tenantCount].id) }
        var drivers = [Driver?](repeating: nil, count: driverCount)
        try await withThrowingTaskGroup(of: Driver.self) { group in
            var next = 0
            func add() {
                guard next < assignments.count else { return }
                let (index, tenantID) = assignments[next]
                next += 1
                group.addTask {
                    let (device, key) = try await repository.createDevice(tenant: TenantID(tenantID)!, name: "driver-\(index)",
                                                                           group: "fleet", grade: 0)
                    return Driver(index: index, tenant: tenantID, deviceID: device.id, apiKey: key, booking: nil)
                }
            }
            for _ in 0..<8 { add() }
            while let driver = try await group.next() {
                drivers[driver.index] = driver
                add()
            }
        }
        let all = drivers.compactMap { $0 }
        for t in tenants.indices {
            tenants[t] = Tenant(id: tenants[t].id, drivers: all.filter { $0.tenant == tenants[t].id }.map(\.index), token: "")
        }
        return Fleet(tenants: tenants, drivers: all)
    }

    /// Signs in each tenant's admin over the API (the viewers' access tokens).
    public mutating func logIn(baseURL: String, http: HTTPClient, password: String) async throws {
        for t in tenants.indices {
            let body = #"{"tenant":"\#(tenants[t].id)","email":"viewer@\#(tenants[t].id).sim.test","password":"\#(password)"}"#
            let (status, text) = try await LoadHTTP.send(http, "POST", baseURL + "/api/v1/auth/login", body: body, headers: [:])
            guard status == 200, let data = text.data(using: .utf8),
                  let object = try JSONSerialization.jsonObject(with: data) as? [String: Any],
                  let token = object["access_token"] as? String
            else { throw LoadError.refused("login for \(tenants[t].id) answered \(status): \(text)") }
            tenants[t].token = token
        }
    }

    /// Puts every `stride`-th driver of each tenant on a booking, accepted over the API by the device.
    public mutating func acceptBookings(fraction: Double, baseURL: String, http: HTTPClient) async throws {
        guard fraction > 0 else { return }
        for tenant in tenants {
            let count = Int((Double(tenant.drivers.count) * fraction).rounded())
            for index in tenant.drivers.prefix(count) {
                let booking = "sim-\(drivers[index].tenant)-b\(index)"
                let (status, text) = try await LoadHTTP.send(http, "POST", baseURL + "/api/v1/bookings/\(booking)/accept", body: nil,
                                                             headers: ["X-API-Key": drivers[index].apiKey])
                guard status == 200 || status == 201 else { throw LoadError.refused("accept \(booking) answered \(status): \(text)") }
                drivers[index].booking = booking
            }
        }
    }
}

public enum LoadError: Error, CustomStringConvertible {
    case invalid(String)
    case refused(String)
    case server(String)

    public var description: String {
        switch self {
        case .invalid(let text), .refused(let text), .server(let text): return text
        }
    }
}

/// Small HTTP helpers over AsyncHTTPClient.
public enum LoadHTTP {
    /// Host and port of a plain-HTTP base URL, for the simulator's own connections (drivers and
    /// viewers speak HTTP/1.1 over NIO directly, without TLS). The commands check `--target` with it.
    public static func hostAndPort(_ baseURL: String) throws -> (host: String, port: Int) {
        guard let url = URL(string: baseURL), url.scheme == "http", let host = url.host else {
            throw LoadError.invalid("--target must be a plain http:// URL with a host (the load clients do not speak TLS): \(baseURL)")
        }
        return (host, url.port ?? 80)
    }

    public static func makeClient(connections: Int) -> HTTPClient {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(idleTimeout: .seconds(120), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        configuration.timeout = .init(connect: .seconds(30))
        configuration.decompression = .disabled
        return HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
    }

    /// Runs `body` with a client and shuts it down afterwards.
    public static func withClient<T: Sendable>(connections: Int, _ body: (HTTPClient) async throws -> T) async throws -> T {
        let client = makeClient(connections: connections)
        do {
            let result = try await body(client)
            try? await client.shutdown()
            return result
        } catch {
            try? await client.shutdown()
            throw error
        }
    }

    /// One request; returns the status and the body as text (up to 16 MiB).
    public static func send(_ http: HTTPClient, _ method: String, _ url: String, body: String?, headers: [String: String],
                            timeout: TimeAmount = .seconds(30)) async throws -> (Int, String) {
        let (status, buffer) = try await sendRaw(http, method, url, body: body.map { ByteBuffer(string: $0) }, headers: headers, timeout: timeout)
        return (status, String(buffer: buffer))
    }

    public static func sendRaw(_ http: HTTPClient, _ method: String, _ url: String, body: ByteBuffer?, headers: [String: String],
                               timeout: TimeAmount = .seconds(30)) async throws -> (Int, ByteBuffer) {
        var request = HTTPClientRequest(url: url)
        request.method = .init(rawValue: method)
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(body)
        }
        let response = try await http.execute(request, timeout: timeout)
        let collected = try await response.body.collect(upTo: 16 << 20)
        return (Int(response.status.code), collected)
    }
}
