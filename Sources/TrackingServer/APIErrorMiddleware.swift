import Hummingbird
import Logging
import TrackingCore
import TrackingStore

/// Turns every error into the JSON error shape with the right status. Unexpected errors are
/// logged with detail and answered with a generic 500 that leaks nothing.
struct APIErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch {
            return APIError(answering: error, to: request, logger: context.logger).response
        }
    }
}

extension APIError {
    /// The JSON error a client gets for `error`: an `APIError` as is, Hummingbird's HTTP errors
    /// with our codes, anything else a 500 that leaks nothing (logged with detail).
    init(answering error: any Error, to request: Request, logger: Logger) {
        switch error {
        case let error as APIError:
            self = error
        case let error as HTTPError:
            let code = error.status == .notFound ? "not_found" : error.status == .contentTooLarge ? "payload_too_large" : "http_error"
            let message = error.status == .notFound ? "No route for \(request.method) \(request.uri.path)." :
                error.status == .contentTooLarge ? "The request body is larger than \(ServerConfiguration.maxBodyBytes) bytes." :
                (error.body ?? error.status.reasonPhrase)
            self.init(status: error.status.code, code: code, message: message)
        case let error as any HTTPResponseError:
            self.init(status: error.status.code, code: "http_error", message: error.status.reasonPhrase)
        case let error where isConnectionLoss(error):
            logger.warning("database unavailable: \(describeDatabaseError(error))")
            self = .databaseUnavailable
        default:
            logger.error("unhandled error: \(String(reflecting: error))")
            self.init(status: 500, code: "internal", message: "Internal error; the server log has details.")
        }
    }
}

extension APIError {
    /// The database went away under the request (lost connection, restart, shutdown): retryable.
    static let databaseUnavailable = APIError.unavailable(
        "The database is unavailable (restarting or unreachable); nothing was changed unless an earlier reply said so. "
            + "Retry after the delay in Retry-After.", retryAfterSeconds: 2)

    var response: Response {
        var headers: HTTPFields = [.contentType: "application/json; charset=utf-8"]
        if let retryAfterSeconds { headers[.retryAfter] = "\(retryAfterSeconds)" }
        return Response(status: .init(code: status), headers: headers, body: .init(byteBuffer: .init(string: jsonBody)))
    }
}

func jsonResponse(_ json: String, status: HTTPResponse.Status = .ok) -> Response {
    Response(status: status, headers: [.contentType: "application/json; charset=utf-8"], body: .init(byteBuffer: .init(string: json)))
}
