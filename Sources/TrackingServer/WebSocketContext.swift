import Hummingbird
import NIOCore
import HummingbirdWebSocket
import Synchronization
import TrackingCore
import TrackingStore

/// The request context of WebSocket upgrades. The upgrade check authenticates the caller and
/// leaves what it found in `admission`, a box shared by every copy of the context, so the
/// socket's handler does not authenticate a second time.
struct WebSocketRequestContextWithAdmission: RequestContext, WebSocketRequestContext {
    var coreContext: CoreRequestContextStorage
    let webSocket: WebSocketHandlerReference<Self>
    let admission: AdmissionBox
    /// The connection, which becomes the WebSocket: its session writes live events straight
    /// into it (see `WebSocketLane`).
    let channel: any Channel

    init(source: Source) {
        coreContext = .init(source: source)
        webSocket = .init()
        admission = AdmissionBox()
        channel = source.channel
    }

    var maxUploadSize: Int { 0 }
}

/// What the upgrade check decided: the admission, or the error the socket is closed with.
final class AdmissionBox: Sendable {
    private let value = Mutex<Result<WebSocketAdmission, APIError>?>(nil)

    func store(_ decision: Result<WebSocketAdmission, APIError>) { value.withLock { $0 = decision } }
    func take() -> Result<WebSocketAdmission, APIError>? { value.withLock { $0 } }
}

/// Who was let in, and for `/ws/tracking/{id}` which trip and from where.
struct WebSocketAdmission: Sendable {
    let principal: Principal
    /// The trip room the socket opens with, and the opening (snapshot or resume from `?since=`).
    let trip: TripRecord?
    let since: String?
}
