import Foundation
import RaffleAdmission
import RaffleWire
import Synchronization
import Testing

let ms: UInt64 = 1_000_000

@Suite("GCRA buckets, with an injected clock")
struct GCRATests {
    @Test func exactTokenArithmeticBurstAndRefill() {
        let bucket = AtomicGCRA(RateLimit(ratePerSecond: 1_000, burst: 10))  // one token per ms
        let t0: UInt64 = 5_000 * ms
        #expect(bucket.take(10, now: t0) == .admit, "a full bucket gives its whole burst")
        #expect(bucket.take(1, now: t0) == .wait(nanoseconds: ms), "the next token exists 1 ms later, exactly")
        #expect(bucket.take(3, now: t0) == .wait(nanoseconds: 3 * ms))
        #expect(bucket.take(1, now: t0 + ms - 1) == .wait(nanoseconds: 1))
        #expect(bucket.take(1, now: t0 + ms) == .admit)
        #expect(bucket.available(now: t0 + ms) == 0)
        // Idle for a long time refills to the burst, not beyond.
        #expect(bucket.available(now: t0 + 60_000 * ms) == 10)
        #expect(bucket.take(10, now: t0 + 60_000 * ms) == .admit)
        #expect(bucket.take(1, now: t0 + 60_000 * ms) != .admit)
    }

    @Test func aCostAboveTheBurstNeverFits() {
        let bucket = AtomicGCRA(RateLimit(ratePerSecond: 100, burst: 50))
        #expect(bucket.take(51, now: 0) == .neverFits)
        #expect(bucket.take(50, now: 0) == .admit)
        var local = LocalGCRA(RateLimit(ratePerSecond: 100, burst: 50))
        #expect(local.take(51, now: 0) == .neverFits)
    }

    @Test func retryAfterIsPreciseForRatesThatDoNotDivideASecond() {
        for rate: UInt64 in [3, 7, 13, 999, 123_457] {
            let bucket = AtomicGCRA(RateLimit(ratePerSecond: rate, burst: 1))
            #expect(bucket.take(1, now: 1_000 * ms) == .admit)
            guard case .wait(let ns) = bucket.take(1, now: 1_000 * ms) else {
                Issue.record("rate \(rate): expected a wait")
                continue
            }
            let exact = 1_000_000_000.0 / Double(rate)
            #expect(abs(Double(ns) - exact) < Double(ms), "rate \(rate): \(ns) ns vs \(exact)")
            #expect(bucket.take(1, now: 1_000 * ms + ns) == .admit, "available exactly when promised")
        }
    }

    @Test func refundGivesTokensBack() {
        var local = LocalGCRA(RateLimit(ratePerSecond: 1_000, burst: 10))
        #expect(local.take(10, now: 0) == .admit)
        local.refund(4, now: 0)
        #expect(local.available(now: 0) == 4)
        #expect(local.take(4, now: 0) == .admit)
    }

    @Test func manyThreadsNeverAdmitMoreThanRateTimesTimePlusBurst() {
        let rate: UInt64 = 10_000
        let burst: UInt64 = 500
        let bucket = AtomicGCRA(RateLimit(ratePerSecond: rate, burst: burst))
        let clock = Atomic<UInt64>(1_000 * ms)
        let admitted = Atomic<UInt64>(0)
        let done = DispatchSemaphore(value: 0)
        for _ in 0..<4 {
            Thread.detachNewThread {
                for _ in 0..<50_000 {
                    // Each attempt moves shared virtual time forward by 1 µs.
                    let now = clock.add(1_000, ordering: .relaxed).newValue
                    if bucket.take(3, now: now) == .admit { admitted.add(3, ordering: .relaxed) }
                }
                done.signal()
            }
        }
        for _ in 0..<4 { done.wait() }
        let elapsed = clock.load(ordering: .relaxed) - 1_000 * ms
        let allowed = rate * elapsed / 1_000_000_000 + burst
        let got = admitted.load(ordering: .relaxed)
        #expect(got <= allowed, "admitted \(got) > \(allowed)")
        #expect(got >= allowed - 3 * 4, "and the limit is used, not wasted (\(got) of \(allowed))")
    }
}

@Suite("Admission controller")
struct AdmissionControllerTests {
    static let key = "k3y-for-partner-a-0123456789"

    func controller(global: RateLimit? = RateLimit(ratePerSecond: 1_000, burst: 100), _ edit: (inout AdmissionConfiguration) -> Void = { _ in })
        -> AdmissionController
    {
        var config = AdmissionConfiguration()
        config.global = global
        config.anonymous = RateLimit(ratePerSecond: 100, burst: 20)
        config.clients = [.init(name: "partner-a", key: Self.key, rate: 500, burst: 50)]
        edit(&config)
        return AdmissionController(config)
    }

    func identify(_ c: AdmissionController, _ header: String) -> Int? {
        Array(header.utf8).withUnsafeBytes { c.identify(authorization: $0) }
    }

    @Test func apiKeysAndTheAnonymousClass() {
        let c = controller()
        #expect(identify(c, "Bearer " + Self.key) == 0)
        #expect(identify(c, "Bearer " + Self.key + "x") == nil, "a longer key is another key")
        for k in 1...3 {
            // The real key followed by 256·k bytes: the length differs by a multiple of 256, which
            // once folded to zero in a UInt8 and let these through.
            let padded = "Bearer " + Self.key + String(repeating: "\0", count: 256 * k)
            #expect(identify(c, padded) == nil, "key + \(256 * k) NUL bytes")
            #expect(identify(c, "Bearer " + Self.key + String(repeating: "a", count: 256 * k)) == nil)
        }
        #expect(identify(c, "Bearer " + String(Self.key.dropLast())) == nil)
        #expect(identify(c, "Bearer wrong") == nil, "a wrong key is anonymous, not an error")
        #expect(identify(c, "") == nil)
        #expect(identify(c, "Basic " + Self.key) == nil)
    }

    @Test func clientBucketThenGlobalBucket() {
        let c = controller()
        var anonymous = LocalGCRA(c.configuration.anonymous)
        // A keyed client has its own burst (50) — cost is entries + 1.
        #expect(c.admit(client: 0, anonymous: &anonymous, entries: 49, now: 0) == .admit)
        guard case .throttle(let waitMs, .rateLimited, let limit, "partner-a", _) = c.admit(client: 0, anonymous: &anonymous, entries: 9, now: 0)
        else {
            Issue.record("expected the client's own limit")
            return
        }
        #expect(waitMs == 20, "10 tokens at 500/s: exactly 20 ms")
        #expect(limit.ratePerSecond == 500)
        // The anonymous connection bucket (burst 20).
        #expect(c.admit(client: nil, anonymous: &anonymous, entries: 30, now: 0) == .tooLarge(cost: 31, limit: c.configuration.anonymous, policy: "anonymous"))
        #expect(c.admit(client: nil, anonymous: &anonymous, entries: 19, now: 0) == .admit)
    }

    @Test func oversizeBatchIsNonRetryable() {
        let c = controller()
        var anonymous = LocalGCRA(RateLimit(ratePerSecond: 1_000_000, burst: 1_000_000))
        guard case .tooLarge(let cost, let limit, "global") = c.admit(client: nil, anonymous: &anonymous, entries: 150, now: 0) else {
            Issue.record("a batch above the global burst must be refused as too large")
            return
        }
        #expect(cost == 151 && limit.burst == 100)
        #expect(anonymous.available(now: 0) == 1_000_000, "the client's tokens were given back")
    }

    @Test func waitingRoomSlotsAreStrictlySpreadAndBounded() {
        let c = controller { $0.waitingRoomHorizonMilliseconds = 100 }
        let now: UInt64 = 10_000 * ms
        var anonymous = LocalGCRA(RateLimit(ratePerSecond: 1_000_000, burst: 1_000_000))
        #expect(c.admit(client: nil, anonymous: &anonymous, entries: 99, now: now) == .admit)  // drains the global burst
        var hints: [UInt32] = []
        var reasons: [ThrottleReason] = []
        for _ in 0..<80 {
            guard case .throttle(let m, let reason, _, _, _) = c.admit(client: nil, anonymous: &anonymous, entries: 1, now: now) else {
                Issue.record("expected throttling")
                return
            }
            hints.append(m)
            reasons.append(reason)
        }
        // Cost 2 at 1,000/s: slots 2 ms apart, from the first moment one could fit.
        #expect(Array(hints.prefix(50)) == Array(stride(from: UInt32(2), through: 100, by: 2)))
        #expect(zip(hints, hints.dropFirst()).allSatisfy { $0 <= $1 })
        #expect(hints.allSatisfy { $0 <= 100 }, "bounded by the horizon")
        #expect(reasons.dropFirst().allSatisfy { $0 == .waitingRoom })
        #expect(c.waitingRoomDepth(now: now) > 0)
    }

    /// The comparison mode (`--flat-retry-after-ms`): no waiting room, everyone the bucket cannot
    /// take is told the same retry-after, and no slots are handed out.
    @Test func aFlatRetryAfterTellsEveryoneTheSameAndHandsOutNoSlots() {
        let c = controller { $0.flatRetryAfterMilliseconds = 1_000 }
        let now: UInt64 = 10_000 * ms
        var anonymous = LocalGCRA(RateLimit(ratePerSecond: 1_000_000, burst: 1_000_000))
        #expect(c.admit(client: nil, anonymous: &anonymous, entries: 99, now: now) == .admit)  // drains the global burst
        for _ in 0..<50 {
            guard case .throttle(let m, let reason, _, let policy, _) = c.admit(client: nil, anonymous: &anonymous, entries: 1, now: now) else {
                Issue.record("expected throttling")
                return
            }
            #expect(m == 1_000 && reason == .rateLimited && policy == "global")
        }
        #expect(c.waitingRoomDepth(now: now) == 0, "no waiting-room slots in flat mode")
    }

    @Test func backpressureEngagesAndReleasesWithHysteresis() {
        let c = controller { config in
            config.logBacklogHighWaterBytes = 1_000
            config.logBacklogLowWaterBytes = 100
        }
        var anonymous = LocalGCRA(c.configuration.anonymous)
        c.logState(backlogBytes: 999, drainedBytes: 1_000, overNanoseconds: 1_000_000)
        #expect(!c.isOverloaded)
        c.logState(backlogBytes: 1_000, drainedBytes: 1_000, overNanoseconds: 1_000_000)
        #expect(c.isOverloaded)
        guard case .throttle(let m, .serverBusy, _, _, _) = c.admit(client: nil, anonymous: &anonymous, entries: 1, now: 0) else {
            Issue.record("expected server busy")
            return
        }
        #expect(m >= 1, "derived from the drain rate, at least 1 ms")
        c.logState(backlogBytes: 500, drainedBytes: 1_000, overNanoseconds: 1_000_000)
        #expect(c.isOverloaded, "stays on until the low-water mark")
        c.logState(backlogBytes: 100, drainedBytes: 1_000, overNanoseconds: 1_000_000)
        #expect(!c.isOverloaded)
        #expect(c.admit(client: nil, anonymous: &anonymous, entries: 1, now: 0) == .admit)
    }

    @Test func limitsFileIsReadAndCheckedWithClearErrors() throws {
        let dir = NSTemporaryDirectory() + "raffled-limits-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let good = dir + "/good.json"
        try #"{"global":{"rate":1000,"burst":2000},"clients":[{"name":"a","key":"0123456789abcdef0","rate":10,"burst":20}]}"#
            .write(toFile: good, atomically: true, encoding: .utf8)
        let config = try AdmissionConfiguration.load(path: good)
        #expect(config.global == RateLimit(ratePerSecond: 1_000, burst: 2_000))
        #expect(config.anonymous == AdmissionConfiguration().anonymous, "missing fields keep their defaults")
        #expect(config.clients.first?.name == "a")
        let short = dir + "/short.json"
        try #"{"clients":[{"name":"a","key":"short","rate":10,"burst":20}]}"#.write(toFile: short, atomically: true, encoding: .utf8)
        #expect { try AdmissionConfiguration.load(path: short) } throws: { "\($0)".contains("at least 16 characters") }
        #expect { try AdmissionConfiguration.load(path: dir + "/missing.json") } throws: { "\($0)".contains("cannot read") }
    }
}
