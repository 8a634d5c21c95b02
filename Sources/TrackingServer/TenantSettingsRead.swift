import Hummingbird
import TrackingCore
import TrackingStore

extension Authenticator {
    /// `GET /api/v1/settings/…`: one of the tenant's settings objects, for the users whose role
    /// is in `roles`; a tenant deleted meanwhile is a 404.
    func readSettings<Settings: Encodable>(_ request: Request, roles: Set<Role>, what: String,
                                           load: (TenantID) async throws -> Settings?) async throws -> Response {
        let principal = try await authenticate(request)
        _ = try principal.requireUser(roles, to: "read \(what)")
        guard let settings = try await load(principal.tenant) else {
            throw APIError.notFound("No tenant \(principal.tenant).")
        }
        return try encodedResponse(settings)
    }
}
