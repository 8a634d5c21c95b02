import Hummingbird
import Logging
import TrackingCore

/// Turns every error into the JSON error shape with the right status. Unexpected errors are
/// logged with detail and answered with a generic 500 that leaks nothing.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.response
        } catch let error as HTTPError {
            let code = error.status == .notFound ? "not_found" : error.status == .contentTooLarge ? "payload_too_large" : "http_error"
            let message = error.status == .notFound ? "No route for \(request.method) \(request.uri.path)." :
                error.status == .contentTooLarge ? "The request body is larger than \(ServerConfiguration.maxBodyBytes) bytes." :
                (error.body ?? error.status.reasonPhrase)
            return APIError(status: error.status.code, code: code, message: message).response
        } catch let error as any HTTPResponseError {
            return APIError(status: error.status.code, code: "http_error", message: error.status.reasonPhrase).response
        } catch {
            context.logger.error("unhandled error: \(String(reflecting: error))")
            return APIError(status: 500, code: "internal", message: "Internal error; the server log has details.").response
        }
    }
}

extension APIError {
    var response: Response {
        Response(
            status: .init(code: status),
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: .init(string: jsonBody)))
    }
}

func jsonResponse(_ json: String, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: .init(string: json)))
}
