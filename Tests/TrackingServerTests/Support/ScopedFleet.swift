import Foundation
import Testing
import TrackingCore
import TrackingStore
import TrackingTestSupport

/// A tenant with devices in two groups at several grades, each with a marker, for scope tests:
/// van1 (vans, grade 1), van5 (vans, grade 5), truck2 (trucks, grade 2).
struct ScopedFleet: Sendable {
    struct Member: Sendable {
        let device: DeviceIdentity
        let apiKey: String
        var id: String { device.id.uuidString.lowercased() }
    }

    let tenant: TenantID
    let van1: Member
    let van5: Member
    let truck2: Member

    var all: [Member] { [van1, van5, truck2] }

    /// Creates the fleet and posts fix `first + k` for member k, so each has a marker.
    static func create(_ live: LiveNode, tenant id: String = "acme", first: Int = 1) async throws -> ScopedFleet {
        let tenant = TenantID(id)!
        try await live.repository.createTenant(id: tenant, name: id.capitalized)
        func member(_ name: String, _ group: String, _ grade: Int) async throws -> Member {
            let (device, key) = try await live.repository.createDevice(tenant: tenant, name: name, group: group, grade: grade)
            return Member(device: device, apiKey: key)
        }
        let fleet = ScopedFleet(tenant: tenant, van1: try await member("van1", "vans", 1),
                                van5: try await member("van5", "vans", 5), truck2: try await member("truck2", "trucks", 2))
        for (offset, member) in fleet.all.enumerated() {
            try await live.postPositions(Fixes.object(first + offset), apiKey: member.apiKey, expecting: 1)
        }
        return fleet
    }

    /// Posts one fix from each member (fix numbers `from`, `from + 1`, `from + 2`) and returns
    /// the seq of the last one.
    func postRound(_ live: LiveNode, from: Int) async throws {
        for (offset, member) in all.enumerated() {
            try await live.postPositions(Fixes.object(from + offset), apiKey: member.apiKey, expecting: 1)
        }
    }
}

extension SSEParser.Event {
    /// The device an event is about (`device_id` of an update, add, remove, removed or purged).
    var deviceID: String? { (try? object())?["device_id"] as? String }

    /// Device ids in a snapshot or reset event.
    var snapshotDevices: Set<String> {
        let positions = ((try? object())?["positions"] as? [[String: Any]]) ?? []
        return Set(positions.compactMap { $0["device_id"] as? String })
    }
}

extension VisibilityScope {
    static func upTo(_ rules: [String: Int]) -> VisibilityScope {
        VisibilityScope(groups: rules.mapValues { .upTo($0) })
    }

    static func oneOf(_ rules: [String: Set<Int>]) -> VisibilityScope {
        VisibilityScope(groups: rules.mapValues { .oneOf($0) })
    }
}
