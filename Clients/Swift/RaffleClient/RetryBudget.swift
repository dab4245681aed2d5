
/// Limits retries to a share of requests, so a struggling server is not hammered: each first attempt
/// deposits `ratio` of a token, each retry withdraws one, and `minimumPerSecond` tokens a second are
/// always allowed (so a quiet client can still retry). Tokens are capped at `minimumPerSecond` plus
/// `ratio` × the requests of the last few seconds' worth (`capacity`). Time is passed in.
///
/// Defaults: ratio 0.2 (retries ≤ 20 % of requests), 10 retries a second floor.
public final class RetryBudget: Sendable {
    /// Share of requests that may be retried. Default 0.2.
    public let ratio: Double
    /// Retries always allowed per second. Default 10.
    public let minimumPerSecond: Double
    private let capacity: Double
    private let state: Locked<(tokens: Double, floor: Double, lastRefill: ContinuousClock.Instant?)>

    /// Creates a budget.
    public init(ratio: Double = 0.2, minimumPerSecond: Double = 10, capacity: Double = 1_000) {
        self.ratio = max(ratio, 0)
        self.minimumPerSecond = max(minimumPerSecond, 0)
        self.capacity = max(capacity, 1)
        state = Locked((0, max(minimumPerSecond, 0), nil))
    }

    /// Records a first attempt.
    public func deposit() {
        state.withLock { $0.tokens = min(capacity, $0.tokens + ratio) }
    }

    /// Takes a retry token at `now`; false when the budget is spent.
    public func withdraw(now: ContinuousClock.Instant) -> Bool {
        state.withLock { s in
            if let last = s.lastRefill {
                let elapsed = Double((now - last).nanoseconds) / 1e9
                s.floor = min(minimumPerSecond, s.floor + elapsed * minimumPerSecond)
            }
            s.lastRefill = now
            if s.tokens >= 1 - 1e-9 {  // tolerate 0.2 × 5 summing to 0.999…
                s.tokens = max(s.tokens - 1, 0)
                return true
            }
            if s.floor >= 1 {
                s.floor -= 1
                return true
            }
            return false
        }
    }
}
