import Foundation
public import RaffleWire
public import Synchronization

/// Admission limits: from the `raffled` CLI and, for API keys, a JSON file (see README "Throttling").
public struct AdmissionConfiguration: Sendable, Hashable, Codable {
    /// One API key's client.
    public struct Client: Sendable, Hashable, Codable {
        /// A name for logs and metrics (the key itself is never logged).
        public var name: String
        /// The secret sent as `authorization: Bearer <key>`.
        public var key: String
        /// Entries per second and burst.
        public var rate: UInt64
        public var burst: UInt64

        public init(name: String, key: String, rate: UInt64, burst: UInt64) {
            self.name = name
            self.key = key
            self.rate = rate
            self.burst = burst
        }
    }

    /// The server-wide bucket (entries/s). Default 5,000,000/s, burst 10,000,000 — about what one
    /// core makes durable (Bench/RESULTS.md); nil turns it off.
    public var global: RateLimit? = RateLimit(ratePerSecond: 5_000_000, burst: 10_000_000)
    /// Requests without a known key, per connection. Default 20,000/s, burst 40,000.
    public var anonymous = RateLimit(ratePerSecond: 20_000, burst: 40_000)
    /// Cost added to every batch on top of its entries, so empty-ish requests are not free. Default 1.
    public var requestCost: UInt64 = 1
    /// Clients with API keys.
    public var clients: [Client] = []
    /// How far ahead the waiting room hands out slots. Default 60 s.
    public var waitingRoomHorizonMilliseconds: UInt64 = 60_000
    /// nil (the default): batches the global bucket cannot take get waiting-room slots. A value: no
    /// waiting room — every such batch is told this same retry-after (ms), the usual "come back in a
    /// second" that leaves the spreading to the clients' jitter. For comparison runs (Bench/RESULTS.md).
    public var flatRetryAfterMilliseconds: UInt32?
    /// Log backlog (appended, not yet durable) at which new batches are throttled, and below which
    /// admission resumes. Defaults 32 MiB and 8 MiB.
    public var logBacklogHighWaterBytes: UInt64 = 32 << 20
    public var logBacklogLowWaterBytes: UInt64 = 8 << 20

    public init() {}

    enum CodingKeys: String, CodingKey {
        case global, anonymous, requestCost, clients, waitingRoomHorizonMilliseconds, logBacklogHighWaterBytes, logBacklogLowWaterBytes
        case flatRetryAfterMilliseconds
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let defaults = AdmissionConfiguration()
        global = try c.decodeIfPresent(RateLimit.self, forKey: .global) ?? defaults.global
        anonymous = try c.decodeIfPresent(RateLimit.self, forKey: .anonymous) ?? defaults.anonymous
        requestCost = try c.decodeIfPresent(UInt64.self, forKey: .requestCost) ?? defaults.requestCost
        clients = try c.decodeIfPresent([Client].self, forKey: .clients) ?? []
        waitingRoomHorizonMilliseconds = try c.decodeIfPresent(UInt64.self, forKey: .waitingRoomHorizonMilliseconds) ?? defaults.waitingRoomHorizonMilliseconds
        logBacklogHighWaterBytes = try c.decodeIfPresent(UInt64.self, forKey: .logBacklogHighWaterBytes) ?? defaults.logBacklogHighWaterBytes
        logBacklogLowWaterBytes = try c.decodeIfPresent(UInt64.self, forKey: .logBacklogLowWaterBytes) ?? defaults.logBacklogLowWaterBytes
        flatRetryAfterMilliseconds = try c.decodeIfPresent(UInt32.self, forKey: .flatRetryAfterMilliseconds)
    }

    /// Reads a JSON config file: `{"global": {"rate", "burst"}, "anonymous": {...}, "requestCost",
    /// "clients": [{"name", "key", "rate", "burst"}], ...}`.
    /// - Throws: `AdmissionConfigurationError` naming the file and what is wrong.
    public static func load(path: String) throws -> AdmissionConfiguration {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw AdmissionConfigurationError(message: "cannot read the limits file \(path)")
        }
        let config: AdmissionConfiguration
        do { config = try JSONDecoder().decode(AdmissionConfiguration.self, from: data) } catch {
            throw AdmissionConfigurationError(message: "\(path) is not a valid limits file: \(error)")
        }
        if let problem = config.problem { throw AdmissionConfigurationError(message: "\(path): \(problem)") }
        return config
    }

    /// What is wrong with this configuration, if anything.
    public var problem: String? {
        var names = Set<String>()
        var keys = Set<String>()
        for c in clients {
            if c.key.utf8.count < 16 { return "client \(c.name): keys must be at least 16 characters" }
            if !names.insert(c.name).inserted { return "client name \(c.name) appears twice" }
            if !keys.insert(c.key).inserted { return "client \(c.name): the same key is used twice" }
            if c.rate == 0 || c.burst == 0 { return "client \(c.name): rate and burst must be positive" }
        }
        if logBacklogLowWaterBytes > logBacklogHighWaterBytes { return "logBacklogLowWaterBytes is above logBacklogHighWaterBytes" }
        return nil
    }
}

/// A limits file that cannot be used.
public struct AdmissionConfigurationError: Error, CustomStringConvertible, Sendable {
    public var message: String
    public var description: String { message }
}

/// The outcome of an admission decision.
public enum AdmissionDecision: Hashable, Sendable {
    /// Go ahead.
    case admit
    /// Not now: retry after `milliseconds` (exact, rounded up to the millisecond). `limit` is the
    /// bucket that refused (for the `ratelimit-policy` header), `remaining` its tokens now.
    case throttle(milliseconds: UInt32, reason: ThrottleReason, limit: RateLimit, policy: String, remaining: UInt64)
    /// The batch costs more than the burst of `limit`: it can never pass (BATCH_EXCEEDS_BURST).
    case tooLarge(cost: UInt64, limit: RateLimit, policy: String)
}

/// Decides, per batch, whether to admit it now: the client's bucket (an API key's, or the
/// connection's anonymous one), then the global bucket, then the server's own load. Allocation-free,
/// O(1), safe from every event loop; time is passed in.
public final class AdmissionController: Sendable {
    /// A client known by its API key.
    public final class KnownClient: Sendable {
        /// Its configured name.
        public let name: String
        let key: [UInt8]
        /// Its bucket.
        public let bucket: AtomicGCRA
        /// Batches throttled.
        public let throttled = Atomic<UInt64>(0)
        init(_ c: AdmissionConfiguration.Client) {
            name = c.name
            key = Array(c.key.utf8)
            bucket = AtomicGCRA(RateLimit(ratePerSecond: c.rate, burst: c.burst))
        }
    }

    /// The configuration it enforces.
    public let configuration: AdmissionConfiguration
    /// The clients with API keys, in file order.
    public let clients: [KnownClient]
    /// The server-wide bucket, if any.
    public let global: AtomicGCRA?
    private let waitingRoom = Atomic<UInt64>(0)
    private let overloaded = Atomic<Bool>(false)
    private let drainNanosecondsPerByte = Atomic<UInt64>(0)
    private let backlog = Atomic<UInt64>(0)


    public init(_ configuration: AdmissionConfiguration) {
        self.configuration = configuration
        clients = configuration.clients.map(KnownClient.init)
        global = configuration.global.map(AtomicGCRA.init)
    }

    /// The client whose key is in `authorization` (the header's value, `Bearer <key>`), or nil for
    /// the anonymous class — the same answer, taking the same time, for a wrong key as for none, so
    /// nothing tells a caller whether a key exists. Every configured key is compared in full, in
    /// constant time.
    public func identify(authorization: UnsafeRawBufferPointer) -> Int? {
        let prefix = Array("Bearer ".utf8)
        guard authorization.count > prefix.count, zip(authorization.prefix(prefix.count), prefix).allSatisfy({ $0 == $1 }) else {
            return nil
        }
        let presented = UnsafeRawBufferPointer(rebasing: authorization[prefix.count...])
        var found = -1
        for (i, client) in clients.enumerated() {
            // Lengths differ: a mismatch, whatever the bytes. (Folding the length difference into
            // a UInt8 used to let the key followed by 256·k extra bytes through.)
            var difference: UInt8 = client.key.count == presented.count ? 0 : 1
            for j in 0..<client.key.count {
                difference |= client.key[j] ^ (j < presented.count ? presented[j] : 0)
            }
            // Branch-free select: keep the first match without an early exit.
            let match = difference == 0 && found < 0
            found = match ? i : found
        }
        return found >= 0 ? found : nil
    }

    /// Decides on a batch of `entries` from `client` (nil: anonymous, using `anonymous`, the
    /// connection's bucket) at time `now` (monotonic nanoseconds).
    public func admit(client: Int?, anonymous: inout LocalGCRA, entries: Int, now: UInt64) -> AdmissionDecision {
        if let known = client.flatMap({ $0 >= 0 && $0 < clients.count ? clients[$0] : nil }) {
            var own = SharedBucket(bucket: known.bucket)
            return decide(&own, known: known, entries: entries, now: now)
        }
        return decide(&anonymous, known: nil, entries: entries, now: now)
    }

    /// Decides on a batch of `entries` from an unauthenticated source whose bucket is shared between
    /// threads — UDP: one per source address, whichever event loop's socket the datagram reached —
    /// with the anonymous class's limit.
    public func admit(source: AtomicGCRA, entries: Int, now: UInt64) -> AdmissionDecision {
        var own = SharedBucket(bucket: source)
        return decide(&own, known: nil, entries: entries, now: now)
    }

    /// The decision itself, over the requester's own bucket `own` (generic, so each kind of bucket
    /// gets its own specialised copy: no dynamic dispatch on the hot path).
    private func decide<B: AdmissionBucket>(_ own: inout B, known: KnownClient?, entries: Int, now: UInt64) -> AdmissionDecision {
        let cost = UInt64(max(entries, 0)) &+ configuration.requestCost
        if overloaded.load(ordering: .relaxed) {
            let ns = backlogDrainNanoseconds()
            return .throttle(
                milliseconds: slot(cost: cost, earliest: ns, now: now), reason: .serverBusy,
                limit: configuration.global ?? own.limit, policy: "server", remaining: 0)
        }
        let ownLimit = own.limit
        let ownName = known?.name ?? "anonymous"
        switch own.take(cost, now: now) {
        case .neverFits:
            return .tooLarge(cost: cost, limit: ownLimit, policy: ownName)
        case .wait(let ns):
            known?.throttled.add(1, ordering: .relaxed)
            let remaining = own.available(now: now)
            return .throttle(milliseconds: milliseconds(ns), reason: .rateLimited, limit: ownLimit, policy: ownName, remaining: remaining)
        case .admit:
            break
        }
        guard let global else { return .admit }
        switch global.take(cost, now: now) {
        case .admit:
            return .admit
        case .neverFits:
            own.refund(cost, now: now)
            return .tooLarge(cost: cost, limit: global.limit, policy: "global")
        case .wait(let ns):
            own.refund(cost, now: now)
            let exact = milliseconds(ns)
            if let flat = configuration.flatRetryAfterMilliseconds {
                return .throttle(
                    milliseconds: max(flat, exact), reason: .rateLimited, limit: global.limit, policy: "global", remaining: global.available(now: now))
            }
            let spread = slot(cost: cost, earliest: ns, now: now)
            return .throttle(
                milliseconds: spread, reason: spread > exact ? .waitingRoom : .rateLimited, limit: global.limit, policy: "global",
                remaining: global.available(now: now))
        }
    }


    /// The waiting room: hands throttled batches successive slots of the admission schedule (spaced
    /// by their cost at the global rate, from the earliest time they could fit), so retries come back
    /// at the rate the server admits instead of all at once. Returns the retry-after in milliseconds.
    private func slot(cost: UInt64, earliest: UInt64, now: UInt64) -> UInt32 {
        let perToken = configuration.global?.nanosecondsPerToken ?? 0
        let width = cost &* perToken
        let horizon = configuration.waitingRoomHorizonMilliseconds &* 1_000_000
        var old = waitingRoom.load(ordering: .relaxed)
        while true {
            let start = max(old, now &+ earliest)
            let retry = start &- now
            if retry >= horizon { return milliseconds(horizon) }
            let (exchanged, current) = waitingRoom.compareExchange(expected: old, desired: start &+ width, ordering: .relaxed)
            if exchanged { return milliseconds(retry) }
            old = current
        }
    }

    /// Entries' worth of slots handed out ahead of `now` (the waiting room's depth).
    public func waitingRoomDepth(now: UInt64) -> UInt64 {
        let end = waitingRoom.load(ordering: .relaxed)
        guard end > now, let global = configuration.global else { return 0 }
        return (end - now) / global.nanosecondsPerToken
    }

    /// Reports the log's state (after each commit): turns "server busy" on above the high-water
    /// mark and off below the low-water mark, and learns the drain rate for the retry-after.
    public func logState(backlogBytes: UInt64, drainedBytes: UInt64, overNanoseconds: UInt64) {
        backlog.store(backlogBytes, ordering: .relaxed)
        if drainedBytes > 0 && overNanoseconds > 0 {
            drainNanosecondsPerByte.store(max(overNanoseconds / drainedBytes, 1), ordering: .relaxed)
        }
        if backlogBytes >= configuration.logBacklogHighWaterBytes {
            overloaded.store(true, ordering: .relaxed)
        } else if backlogBytes <= configuration.logBacklogLowWaterBytes {
            overloaded.store(false, ordering: .relaxed)
        }
    }

    /// Whether new batches are being turned away as "server busy".
    public var isOverloaded: Bool { overloaded.load(ordering: .relaxed) }

    /// How long the backlog above the low-water mark takes to drain at the measured rate (≥ 1 ms).
    private func backlogDrainNanoseconds() -> UInt64 {
        let excess = backlog.load(ordering: .relaxed) &- min(backlog.load(ordering: .relaxed), configuration.logBacklogLowWaterBytes)
        let perByte = max(drainNanosecondsPerByte.load(ordering: .relaxed), 1)
        let (ns, overflow) = excess.multipliedReportingOverflow(by: perByte)
        return max(overflow ? UInt64.max >> 2 : ns, 1_000_000)
    }
}

/// Nanoseconds to whole milliseconds, rounded up, clamped to UInt32.
@inline(__always)
func milliseconds(_ ns: UInt64) -> UInt32 {
    let ms = ns / 1_000_000 + (ns % 1_000_000 == 0 ? 0 : 1)
    return UInt32(min(ms, UInt64(UInt32.max)))
}
