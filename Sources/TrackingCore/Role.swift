/// What a user may do in their tenant.
public enum Role: String, Sendable, CaseIterable, Codable {
    /// Everything in the tenant, including users, devices and keys.
    case admin
    /// Reads everything in the tenant (unless a scope narrows it) and manages markers.
    case dispatcher
    /// Posts positions for their own device and reads only that device and its bookings.
    case driver
    /// Reads only, within their scope.
    case viewer

    public static let list = allCases.map(\.rawValue).joined(separator: ", ")
}
