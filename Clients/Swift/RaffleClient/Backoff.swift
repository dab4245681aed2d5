/// How long to wait between retries: exponential backoff with jitter, as a value type.
///
/// Defaults: base 50 ms, cap 10 s, **full jitter** — the n-th delay (n from 0) is uniformly random in
/// `0 … min(cap, base·2ⁿ)` — which spreads a crowd of clients best. `.decorrelated` ("decorrelated
/// jitter") draws each delay uniformly in `base … 3·previous`, capped.
///
/// A server's retry-after is not part of this: it is a floor the client honours separately (see
/// `RetryPolicy`).
public struct Backoff: Sendable, Hashable {
    /// The jitter strategy.
    public enum Jitter: Sendable, Hashable {
        /// `random(0, min(cap, base·2ⁿ))`.
        case full
        /// `min(cap, random(base, 3·previous))`.
        case decorrelated
    }

    /// First delay's upper bound (full) or lower bound (decorrelated). Default 50 ms.
    public var base: Duration
    /// Largest delay. Default 10 s.
    public var cap: Duration
    /// Default `.full`.
    public var jitter: Jitter

    /// Creates a backoff.
    public init(base: Duration = .milliseconds(50), cap: Duration = .seconds(10), jitter: Jitter = .full) {
        self.base = base
        self.cap = max(cap, base)
        self.jitter = jitter
    }

    /// The documented defaults.
    public static let defaults = Backoff()

    /// Produces the delays of one call's retries. Never ends (not an `IteratorProtocol`).
    public struct Iterator: Sendable {
        let backoff: Backoff
        var attempt = 0
        var previous: Duration

        /// The next delay, drawn with `generator`.
        public mutating func next(using generator: inout some RandomNumberGenerator) -> Duration {
            defer { attempt += 1 }
            let cap = backoff.cap.nanoseconds
            let base = backoff.base.nanoseconds
            switch backoff.jitter {
            case .full:
                let shift = min(attempt, 40)
                let (scaled, overflow) = base.multipliedReportingOverflow(by: Int64(1) << shift)
                let bound = overflow ? cap : min(cap, scaled)
                return .nanoseconds(bound <= 0 ? 0 : Int64.random(in: 0...bound, using: &generator))
            case .decorrelated:
                let upper = max(base, min(cap, previous.nanoseconds.multipliedReportingOverflow(by: 3).partialValue))
                let delay = Int64.random(in: base...max(base, upper), using: &generator)
                previous = .nanoseconds(delay)
                return .nanoseconds(min(delay, cap))
            }
        }
    }

    /// A fresh sequence of delays.
    public func makeIterator() -> Iterator { Iterator(backoff: self, previous: base) }
}

extension Duration {
    /// The duration in whole nanoseconds (saturating).
    var nanoseconds: Int64 {
        let (s, a) = components
        let (ns, overflow) = s.multipliedReportingOverflow(by: 1_000_000_000)
        return overflow ? (s < 0 ? .min : .max) : ns.addingReportingOverflow(a / 1_000_000_000).partialValue
    }
}
