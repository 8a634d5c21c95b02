import Foundation
import Hummingbird
import TrackingCore
import TrackingStore

/// `/api/v1/users` (admins): list, read, delete, and set a user's visibility scope, which every
/// open stream of that user applies at once.
struct UserRoutes {
    let repository: TrackingRepository
    let authenticator: Authenticator

    func register(on router: Router<AppRequestContext>) {
        router.get("/api/v1/users", use: list)
        router.get("/api/v1/users/:id", use: show)
        router.delete("/api/v1/users/:id", use: delete)
        router.put("/api/v1/users/:id/scope", use: setScope)
    }

    @Sendable func list(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "list users")
        return try encodedResponse(["users": try await repository.users(tenant: admin.tenant).map(UserView.init)])
    }

    @Sendable func show(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "read users")
        let id = try request.uuidParameter("id", context: context, resource: "user")
        guard let user = try await repository.user(id, tenant: admin.tenant) else {
            throw APIError.notFound("No user \(id.uuidString.lowercased()).")
        }
        return try encodedResponse(UserView(user: user))
    }

    @Sendable func delete(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "delete users")
        let id = try request.uuidParameter("id", context: context, resource: "user")
        guard id != admin.id else {
            throw APIError(status: 409, code: "conflict", message: "You cannot delete yourself; ask another admin.")
        }
        guard try await repository.deleteUser(id, tenant: admin.tenant) else {
            throw APIError.notFound("No user \(id.uuidString.lowercased()).")
        }
        return jsonResponse(#"{"deleted":true}"#)
    }

    /// Body: `{"groups": {"vans": {"max_grade": 3}, "trucks": {"grades": [1, 2]}}}`, or
    /// `{"groups": null}` / `null` to clear the scope (the whole tenant).
    @Sendable func setScope(request: Request, context: AppRequestContext) async throws -> Response {
        let admin = try await authenticator.authenticate(request).requireUser([.admin], to: "change scopes")
        let id = try request.uuidParameter("id", context: context, resource: "user")
        let body = try await request.decodeJSON(JSONValue.self)
        let scope: VisibilityScope?
        switch body {
        case .null, .object(["groups": .null]): scope = nil
        default: scope = try VisibilityScope(json: body)
        }
        guard let user = try await repository.setScope(scope, user: id, tenant: admin.tenant) else {
            throw APIError.notFound("No user \(id.uuidString.lowercased()).")
        }
        return try encodedResponse(UserView(user: user))
    }
}
