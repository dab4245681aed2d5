import Synchronization

/// A rate: `ratePerSecond` tokens a second with room for `burst` at once.
public struct RateLimit: Hashable, Sendable, Codable {
    /// Tokens per second (1 … 1,000,000,000).
    public var ratePerSecond: UInt64
    /// Most tokens that can be taken at once; a cost above it can never pass.
    public var burst: UInt64

    /// Creates a limit (values are clamped to 1 … 10^9 and burst ≥ 1).
    public init(ratePerSecond: UInt64, burst: UInt64) {
        self.ratePerSecond = min(max(ratePerSecond, 1), 1_000_000_000)
        self.burst = min(max(burst, 1), 1 << 40)
    }

    /// Nanoseconds per token, rounded up (exact when the rate divides 10^9).
    public var nanosecondsPerToken: UInt64 { (1_000_000_000 + ratePerSecond - 1) / ratePerSecond }

    /// The burst as a time span: how far ahead of now the schedule may run. (burst ≤ 2^40 and
    /// ≤ 10^9 ns per token keep this below 2^70… so it is clamped, never wrapped.)
    var toleranceNanoseconds: UInt64 {
        let (t, overflow) = burst.multipliedReportingOverflow(by: nanosecondsPerToken)
        return overflow ? UInt64.max >> 2 : min(t, UInt64.max >> 2)
    }

    enum CodingKeys: String, CodingKey { case ratePerSecond = "rate", burst }

    /// One GCRA step from state `tat` (the theoretical arrival time of the next token).
    @inline(__always)
    func step(tat: UInt64, cost: UInt64, now: UInt64) -> GCRAStep {
        guard cost <= burst else { return .neverFits }
        let tolerance = toleranceNanoseconds
        let increment = min(cost &* nanosecondsPerToken, tolerance)  // cost ≤ burst: no wrap
        let new = max(tat, now) &+ increment
        // Admit while the schedule runs at most `tolerance` ahead of now.
        if new &- now > tolerance { return .wait(new &- now &- tolerance) }
        return .admit(new)
    }

    /// The state after giving `cost` tokens back.
    @inline(__always)
    func refunded(tat: UInt64, cost: UInt64, now: UInt64) -> UInt64 {
        let decrement = min(cost, burst) &* nanosecondsPerToken
        return tat > decrement ? max(tat - decrement, min(tat, now)) : min(tat, now)
    }

    /// Whole tokens available in state `tat` at `now`.
    @inline(__always)
    func available(tat: UInt64, now: UInt64) -> UInt64 {
        let ahead = tat > now ? tat - now : 0
        let tolerance = toleranceNanoseconds
        return ahead >= tolerance ? 0 : (tolerance - ahead) / nanosecondsPerToken
    }
}

enum GCRAStep {
    case admit(UInt64)
    case wait(UInt64)
    case neverFits
}

/// What a bucket says about a cost.
public enum BucketDecision: Hashable, Sendable {
    /// Admitted; the tokens are taken.
    case admit
    /// Not now: enough tokens exist after exactly this many nanoseconds.
    case wait(nanoseconds: UInt64)
    /// Larger than the burst: can never pass.
    case neverFits
}

/// The Generic Cell Rate Algorithm on one atomic word: the bucket's whole state is the "theoretical
/// arrival time" (TAT) of the next token. Chosen over a classic token bucket because one `UInt64`
/// means a decision is a load, a little integer arithmetic and one compare-and-swap — O(1),
/// allocation-free, and safe from every event loop at once — and the time until a cost fits falls
/// straight out of it: the exact retry-after the protocol promises.
///
/// Time is injected (nanoseconds on any monotonic clock); arithmetic is integer with overflow guards.
public final class AtomicGCRA: Sendable {
    /// The limit it enforces.
    public let limit: RateLimit
    private let tat = Atomic<UInt64>(0)

    /// Creates a full bucket.
    public init(_ limit: RateLimit) { self.limit = limit }

    /// Takes `cost` tokens at `now` if they are there.
    @inline(__always)
    public func take(_ cost: UInt64, now: UInt64) -> BucketDecision {
        var old = tat.load(ordering: .relaxed)
        while true {
            switch limit.step(tat: old, cost: cost, now: now) {
            case .neverFits: return .neverFits
            case .wait(let ns): return .wait(nanoseconds: ns)
            case .admit(let new):
                let (exchanged, current) = tat.compareExchange(expected: old, desired: new, ordering: .relaxed)
                if exchanged { return .admit }
                old = current
            }
        }
    }

    /// Gives back `cost` tokens taken at `now` (when a later check refused the request).
    public func refund(_ cost: UInt64, now: UInt64) {
        var old = tat.load(ordering: .relaxed)
        while true {
            let (exchanged, current) = tat.compareExchange(
                expected: old, desired: limit.refunded(tat: old, cost: cost, now: now), ordering: .relaxed)
            if exchanged { return }
            old = current
        }
    }

    /// Tokens available at `now`.
    public func available(now: UInt64) -> UInt64 { limit.available(tat: tat.load(ordering: .relaxed), now: now) }
}

/// The same algorithm for a bucket owned by one event loop (an anonymous connection's): no atomics.
public struct LocalGCRA: Sendable {
    /// The limit it enforces.
    public let limit: RateLimit
    private var tat: UInt64 = 0

    public init(_ limit: RateLimit) { self.limit = limit }

    /// Takes `cost` tokens at `now` if they are there.
    public mutating func take(_ cost: UInt64, now: UInt64) -> BucketDecision {
        switch limit.step(tat: tat, cost: cost, now: now) {
        case .neverFits: return .neverFits
        case .wait(let ns): return .wait(nanoseconds: ns)
        case .admit(let new):
            tat = new
            return .admit
        }
    }

    /// Gives back `cost` tokens.
    public mutating func refund(_ cost: UInt64, now: UInt64) { tat = limit.refunded(tat: tat, cost: cost, now: now) }

    /// Tokens available at `now`.
    public func available(now: UInt64) -> UInt64 { limit.available(tat: tat, now: now) }
}

/// A bucket admission takes from and refunds to: an event loop's own (`LocalGCRA`) or a shared one
/// (`SharedBucket` over an `AtomicGCRA`).
protocol AdmissionBucket {
    var limit: RateLimit { get }
    mutating func take(_ cost: UInt64, now: UInt64) -> BucketDecision
    mutating func refund(_ cost: UInt64, now: UInt64)
    func available(now: UInt64) -> UInt64
}

extension LocalGCRA: AdmissionBucket {}

/// An `AtomicGCRA` as an `AdmissionBucket` (its methods need no `mutating`: the state is atomic).
struct SharedBucket: AdmissionBucket {
    let bucket: AtomicGCRA
    var limit: RateLimit { bucket.limit }
    func take(_ cost: UInt64, now: UInt64) -> BucketDecision { bucket.take(cost, now: now) }
    func refund(_ cost: UInt64, now: UInt64) { bucket.refund(cost, now: now) }
    func available(now: UInt64) -> UInt64 { bucket.available(now: now) }
}
