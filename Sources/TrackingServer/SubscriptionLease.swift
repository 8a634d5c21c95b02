import Synchronization

/// Hands a subscription from the route to the response body. If the client is gone before the
/// body runs (Hummingbird then never calls it), the lease is released unused and cancels the
/// subscription, so no mailbox or LISTEN is left behind.
final class SubscriptionLease: Sendable {
    private let subscription: Mutex<Subscription?>

    init(_ subscription: Subscription) {
        self.subscription = Mutex(subscription)
    }

    /// The subscription, once; the taker is responsible for cancelling it.
    func take() -> Subscription? {
        subscription.withLock { value in
            defer { value = nil }
            return value
        }
    }

    deinit {
        if let unused = subscription.withLock({ $0 }) {
            Task { await unused.cancel() }
        }
    }
}
