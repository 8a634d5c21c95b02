import Hummingbird
import TrackingCore

/// Refuses U+0000 in the path and in query parameters (names and values) with 422 naming the
/// parameter, for every route at once; JSON bodies are checked where they are decoded
/// (`NULCharacter.checkJSON`). PostgreSQL cannot store the character and answered 500.
struct NULRejectionMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let path = request.uri.path
        if path.contains("%00") || path.utf8.contains(0) { throw NULCharacter.rejection(field: "path") }
        if request.uri.query?.contains("%00") ?? false {
            for (name, value) in request.uri.queryParameters {
                try NULCharacter.check(name, field: String(name).replacingOccurrences(of: "\u{0}", with: "\\u0000"))
                try NULCharacter.check(value, field: String(name))
            }
        }
        return try await next(request, context)
    }
}
