import Foundation
import TrackingCore
import TrackingServer
import TrackingStore

/// The demo tenant: vans with drivers, customers with geofences on the streets the vans will
/// drive, and a route of planned visits per driver, so a first start has something to show.
///
/// It lives in a tenant of its own (`demo`), created afresh by every `pgtrack demo` (the old
/// one is removed first, so the vans start where their routes begin) and removed by
/// `pgtrack demo --remove`. Nothing else is touched.
public struct DemoFleet: Sendable {
    public struct Vehicle: Sendable {
        public let name: String
        public let deviceID: UUID
        public let apiKey: String
        /// The seed of its StreetTrack: provisioning drove a copy of it to place the customers.
        public let seed: UInt64
        /// Parked vehicles post fixes without moving (the dashboard shows them as stopped).
        public let parked: Bool
    }

    public static let tenant = TenantID("demo")!
    public static let adminEmail = "admin@demo.pgtrack.test"
    /// A viewer who sees only the `north` group: the visibility scope in action.
    public static let viewerEmail = "north@demo.pgtrack.test"
    public static let groups = ["north", "south", "east"]
    /// Seconds into the drive at which each routed van passes its customers.
    public static let visitTimes = [45, 120, 240, 420, 600]

    public let password: String
    public let vehicles: [Vehicle]

    /// Creates the demo tenant with `count` vans (every fifth parked, two in three on a route).
    public static func provision(repository: TrackingRepository, count: Int, password: String,
                                 bcryptCost: UInt8 = 12) async throws -> DemoFleet {
        if try await repository.tenantExists(tenant) { _ = try await repository.removeTenant(tenant) }
        try await repository.createTenant(id: tenant, name: "Demo fleet (remove with: pgtrack demo --remove)")
        let registration = UserRegistration(repository: repository, bcryptCost: bcryptCost)
        _ = try await registration.register(
            UserInput(email: adminEmail, name: "Demo admin", password: password, role: "admin"), tenant: tenant)
        _ = try await registration.register(
            UserInput(email: viewerEmail, name: "North viewer", password: password, role: "viewer",
                      scope: .object(["groups": .object(["north": .object(["max_grade": .number(1_000)])])])),
            tenant: tenant)
        var vehicles: [Vehicle] = []
        var customers: [String] = []
        let today = Date().formatted(.iso8601.year().month().day())
        for index in 0..<count {
            let name = String(format: "Van %02d", index + 1)
            let (device, key) = try await repository.createDevice(tenant: tenant, name: name, group: groups[index % groups.count], grade: 0)
            let vehicle = Vehicle(name: name, deviceID: device.id, apiKey: key, seed: UInt64(index + 1), parked: index % 5 == 4)
            vehicles.append(vehicle)
            let driver = try await repository.createDriver(
                DriverFields(name: driverNames[index % driverNames.count], device: .some(device.id),
                             vehiclePlate: .some(String(format: "B-PG %03d", index + 1)), vehicleType: .some("van")), tenant: tenant)
            guard !vehicle.parked, index % 3 != 2 else { continue }
            // Customers where this van will be at each visit time: drive a copy of its track.
            var track = StreetTrack(seed: vehicle.seed)
            var stops: [(id: String, fix: StreetTrack.Fix)] = []
            for second in 1...visitTimes.last! {
                let fix = track.advance(seconds: 1)
                if visitTimes.contains(second) { stops.append(("demo-\(index + 1)-\(stops.count + 1)", fix)) }
            }
            for (n, stop) in stops.enumerated() {
                customers.append(customerEvent(id: stop.id, name: "\(shopNames[(index + n) % shopNames.count]) #\(index + 1)-\(n + 1)",
                                               fix: stop.fix, lsn: customers.count + 1))
            }
            _ = try await repository.applySyncChanges("[" + customers.suffix(stops.count).joined(separator: ",") + "]",
                                                      tenant: tenant, mode: .fail)
            let route = try await repository.createRoute(
                RouteFields(driver: driver.id, name: .some("\(name) round"), scheduledDate: today), tenant: tenant)
            for (n, stop) in stops.enumerated() {
                _ = try await repository.createVisit(
                    VisitFields(route: route.id, customer: stop.id, sequence: n + 1, visitType: n % 2 == 0 ? "delivery" : "pickup"),
                    tenant: tenant)
            }
            _ = try await repository.setRouteStatus(route.id, to: "in_progress", tenant: tenant)
        }
        return DemoFleet(password: password, vehicles: vehicles)
    }

    /// A Debezium-shaped create event for one customer, as a CDC connector would post it.
    static func customerEvent(id: String, name: String, fix: StreetTrack.Fix, lsn: Int) -> String {
        #"{"op":"c","after":{"id":"\#(id)","name":"\#(name)","latitude":\#(fix.latitude),"longitude":\#(fix.longitude),"geofence_radius_m":60},"source":{"connector":"postgresql","db":"demo","schema":"public","table":"customers","ts_ms":\#(Int(Date().timeIntervalSince1970 * 1_000)),"lsn":\#(lsn)}}"#
    }

    static let driverNames = ["Ada", "Ben", "Chiara", "Dmitri", "Elif", "Femi", "Grace", "Hiro", "Ines", "Jonas",
                              "Kemal", "Lena", "Mateo", "Nora", "Omar", "Priya"]
    static let shopNames = ["Corner Shop", "Bakery", "Pharmacy", "Florist", "Bike Repair", "Book Store", "Deli"]
}
