import Foundation
public import Logging
import RaffleCore
public import RaffleWire

/// Settings of a `RaffleClient`. Every field has a documented default.
public struct RaffleClientConfiguration: Sendable {
    /// Sent as `authorization: Bearer <key>` with entries; nil: the anonymous class. Default nil.
    public var apiKey: String?
    /// Sent as `authorization: Bearer <key>` with admin calls (create, close, draw, export,
    /// per-user lookups, stats); nil: none, and the server answers those 401. Public reads (raffle
    /// info, winners) need no key. Default nil.
    public var adminKey: String?
    /// Delays between retries of failures that carry no retry-after. Default `Backoff.defaults`
    /// (full jitter, base 50 ms, cap 10 s).
    public var backoff = Backoff.defaults
    /// How long one call may take, retries included. Default 30 s.
    public var deadline: Duration = .seconds(30)
    /// Time allowed for one attempt before it counts as timed out. Default 10 s.
    public var attemptTimeout: Duration = .seconds(10)
    /// Share of requests that may be retried, and retries always allowed per second. Defaults 0.2, 10.
    public var retryRatio = 0.2
    public var minimumRetriesPerSecond = 10.0
    /// Most jitter added on top of a server's retry-after: this share of it, at most `maxRetryAfterJitter`.
    /// Defaults 10 % and 100 ms — a server-given slot is kept, with only a little spread inside it.
    public var retryAfterJitterShare = 0.1
    public var maxRetryAfterJitter: Duration = .milliseconds(100)
    /// Coalescing of `enter(…)` calls: batches of at most `maxBatchEntries` (default 1,000), sent at
    /// the latest `maxLinger` after the first entry arrived (default 5 ms).
    public var maxBatchEntries = 1_000
    public var maxLinger: Duration = .milliseconds(5)
    /// Batches in flight on one bulk stream (`BulkStream`). Default 8.
    public var streamWindow = 8
    /// Where the client says what it is doing (retries at `debug`); nil, the default: nowhere.
    public var logger: Logger?

    /// The defaults.
    public init(apiKey: String? = nil, adminKey: String? = nil) {
        self.apiKey = apiKey
        self.adminKey = adminKey
    }
}

/// The raffled client: submit entries, with batching, retries that are kind to a struggling server,
/// and the admin calls. Safe to share between tasks.
///
/// ```swift
/// let client = try RaffleClient(transport: HTTP2Transport(host: "raffle.example", port: 8080))
/// let outcome = try await client.enter(user: 42, raffle: 7)        // coalesced with other callers
/// switch outcome {
/// case .accepted, .alreadyEntered: showTicket()                    // both mean "you're in"
/// default: showClosed(outcome)
/// }
/// ```
///
/// Retrying is always safe: the server keeps one entry per user per raffle, so an entry stored by an
/// earlier attempt whose ack was lost comes back `already_entered` on the retry. Treat `accepted`
/// and `already_entered` alike as "entered".
public final class RaffleClient: Sendable {
    /// The transport.
    public let transport: any RaffleTransport
    /// The settings.
    public let configuration: RaffleClientConfiguration
    let budget: RetryBudget
    private let nextRequestID = Locked<UInt64>(1)
    private let attempts = Locked<UInt64>(0)
    private let throttles = Locked<UInt64>(0)
    private let random = Locked(SystemRandomNumberGenerator())
    private let batcher: Batcher

    /// Creates a client.
    public init(transport: any RaffleTransport, configuration: RaffleClientConfiguration = .init()) {
        self.transport = transport
        self.configuration = configuration
        budget = RetryBudget(ratio: configuration.retryRatio, minimumPerSecond: configuration.minimumRetriesPerSecond)
        batcher = Batcher(maxEntries: max(configuration.maxBatchEntries, 1), linger: configuration.maxLinger)
        authorization = configuration.apiKey.map { "Bearer " + $0 }
        adminAuthorization = configuration.adminKey.map { "Bearer " + $0 }
    }

    /// Attempts made so far (first tries and retries), for callers who watch their retry rate.
    public var attemptCount: UInt64 { attempts.load() }

    /// Attempts the server answered `throttled` so far.
    public var throttledCount: UInt64 { throttles.load() }

    /// A fresh request id.
    func requestID() -> UInt64 { nextRequestID.add(1) }

    // MARK: - Entries

    /// Enters one user; concurrent calls are coalesced into batches (see `maxBatchEntries`,
    /// `maxLinger`), each caller getting its own outcome.
    public func enter(user: UInt64, tickets: UInt32 = 1, raffle: UInt64) async throws -> EntryOutcome {
        try await batcher.enqueue(Entry(userID: user, tickets: tickets), raffle: raffle, client: self)
    }

    /// Submits `entries` as one batch and returns one outcome per entry, retrying throttling (after
    /// the server's retry-after), lost connections, timeouts and `0x02xx` errors with backoff, within
    /// the deadline and the retry budget. Invalid requests and other errors fail at once with the
    /// server's code and message.
    /// - Throws: `RaffleClientError`.
    public func submit(_ entries: [Entry], to raffle: UInt64) async throws -> [EntryOutcome] {
        guard !entries.isEmpty else { throw RaffleClientError(.invalidRequest, "a batch needs at least one entry") }
        let id = requestID()
        let frame = try Self.encode(entries, raffle: raffle, requestID: id, flags: frameFlags)
        let count = entries.count
        return try await withRetries { () async throws(RaffleClientError) -> Attempt<[EntryOutcome]> in
            let reply: FramesReply
            do {
                reply = try await self.transport.send(frames: frame, authorization: self.authorization, timeout: self.configuration.attemptTimeout)
            } catch {
                return .failed(Self.transportFailure(error))
            }
            return Self.interpret(reply, requestID: id, count: count)
        }
    }

    /// The request frame of a batch. Synchronous and out of line, as are the other helpers the
    /// async paths call: what they build lives on the thread's stack, not in the task's async
    /// frames (a task allocates those in ~1 KiB slabs, one malloc each; measured, issue #15).
    @inline(never)
    static func encode(_ entries: [Entry], raffle: UInt64, requestID: UInt64, flags: FrameFlags) throws(RaffleClientError) -> [UInt8] {
        do { return try FrameEncoder.encode(Frame(requestID: requestID, flags: flags, body: .entryBatch(raffleID: raffle, entries: entries))) } catch {
            throw RaffleClientError(.invalidRequest, "cannot encode the batch: \(error)")
        }
    }

    /// A transport's failure as the client reports it: its own `RaffleClientError` as it is, any
    /// other error as `.connectionFailed`.
    @inline(never)
    static func transportFailure(_ error: any Error) -> RaffleClientError {
        error as? RaffleClientError ?? RaffleClientError(.connectionFailed, "\(error)")
    }

    /// Reads the first reply frame of an entries request, in place (no frame array is built; the
    /// outcomes are the one allocation). Frames after the first are still checked to be well formed.
    @inline(never)
    static func interpret(_ reply: FramesReply, requestID: UInt64, count: Int) -> Attempt<[EntryOutcome]> {
        let decoder = FrameDecoder(receiver: .client)
        return reply.body.withUnsafeBytes { raw -> Attempt<[EntryOutcome]> in
            let first: FrameView
            do {
                guard let view = try decoder.decode(raw, endOfInput: true) else {
                    return .failed(RaffleClientError(.invalidResponse, "empty reply (HTTP \(reply.status))"))
                }
                first = view
                var offset = view.frameLength
                while offset < raw.count, let next = try decoder.decode(UnsafeRawBufferPointer(rebasing: raw[offset...]), endOfInput: true) {
                    offset += next.frameLength
                }
            } catch {
                return .failed(RaffleClientError(.invalidResponse, "unreadable reply (HTTP \(reply.status)): \(error)"))
            }
            switch first.payload {
            case .batchAck(let ack) where ack.count == count:
                return .done(Array(ack))
            case .batchAck(let ack):
                return .failed(RaffleClientError(.invalidResponse, "ack has \(ack.count) outcomes for \(count) entries"))
            case .throttled(let ms, let reason):
                return .throttled(milliseconds: ms, reason: reason)
            case .error(let e):
                return .failed(RaffleClientError(.server(e.code), "\(e.code): \(e.message)"))
            default:
                return .failed(RaffleClientError(.invalidResponse, "unexpected reply frame \(first.header.type)"))
            }
        }
    }

    /// `Bearer <apiKey>`, made once (not per request).
    let authorization: String?

    var logger: Logger? { configuration.logger }

    /// Sends the entries `enter` calls are still collecting, waits for their answers, then closes
    /// the transport's connections. Use the client no more after it.
    public func shutdown() async {
        await batcher.flushAll(client: self)
        await transport.close()
    }

    let adminAuthorization: String?

    /// Flags for request frames: a checksum where the transport needs one.
    var frameFlags: FrameFlags { transport.requiresChecksum ? .checksum : [] }

    // MARK: - Retries

    /// One attempt's result.
    enum Attempt<T: Sendable>: Sendable {
        case done(T)
        case throttled(milliseconds: UInt32, reason: ThrottleReason)
        case failed(RaffleClientError)
    }

    /// Runs `attempt` until it succeeds, fails for good, the deadline passes or the budget is spent.
    /// - Throws: `RaffleClientError`, or `CancellationError` when the calling task is cancelled.
    /// (`attempt` does not escape: its context lives on the task's stack, not the heap.)
    ///
    /// The first attempt is the whole call almost always, so it runs here with little state; the
    /// loop of retries is `retrying`, whose larger async frame a task allocates only when it is
    /// needed (measured: this frame was 1,296 bytes with the loop inside, more than a task allocator
    /// slab, so every call paid a malloc for it).
    func withRetries<T: Sendable>(_ attempt: () async throws(RaffleClientError) -> Attempt<T>) async throws -> T {
        let start = ContinuousClock.now
        budget.deposit()
        try Task.checkCancellation()
        attempts.add(1)
        let first: Attempt<T>
        do { first = try await attempt() } catch {
            first = .failed(error)
        }
        if case .done(let value) = first { return value }
        return try await retrying(after: first, since: start, attempt)
    }

    /// The retries after a first attempt that did not succeed (see `withRetries`).
    @inline(never)
    func retrying<T: Sendable>(
        after first: Attempt<T>, since start: ContinuousClock.Instant, _ attempt: () async throws(RaffleClientError) -> Attempt<T>
    ) async throws -> T {
        let clock = ContinuousClock()
        let deadline = start + configuration.deadline
        var backoff = configuration.backoff.makeIterator()
        var spendsBudget = false
        var previousFailure: RaffleClientError?
        var result = first
        while true {
            let delay: Duration
            let lastFailure: RaffleClientError
            switch result {
            case .done(let value):
                return value
            case .throttled(let ms, let reason):
                throttles.add(1)
                delay = retryAfterDelay(ms)
                lastFailure = RaffleClientError(.throttled, "throttled (\(reason)) for \(ms) ms")
                spendsBudget = false  // the server chose when to come back: that does not hammer it
            case .failed(let error):
                guard error.isRetryable else { throw error }
                delay = random.withLock { rng in backoff.next(using: &rng) }
                lastFailure = error
                spendsBudget = true
            }
            previousFailure = lastFailure
            if clock.now + delay > deadline {
                throw RaffleClientError(
                    .deadlineExceeded, "gave up after \(configuration.deadline): the next retry would pass the deadline",
                    underlying: lastFailure)
            }
            logger?.debug(
                "retrying", metadata: ["after_ms": "\(delay.nanoseconds / 1_000_000)", "because": "\(lastFailure.message)"])
            // A cancelled sleep throws CancellationError: the caller's cancellation, not a deadline.
            try await Task.sleep(for: delay)
            try Task.checkCancellation()
            if spendsBudget {
                guard budget.withdraw(now: clock.now) else {
                    throw RaffleClientError(
                        .retryBudgetExhausted, "retry budget exhausted: the server is failing; not retrying", underlying: previousFailure)
                }
            }
            attempts.add(1)
            do { result = try await attempt() } catch {
                result = .failed(error)
            }
        }
    }

    /// The server's retry-after is a floor; add only a little jitter inside the slot.
    func retryAfterDelay(_ ms: UInt32) -> Duration {
        let floor = Duration.milliseconds(Int64(ms))
        let share = Int64(Double(floor.nanoseconds) * configuration.retryAfterJitterShare)
        let bound = min(share, configuration.maxRetryAfterJitter.nanoseconds)
        let jitter = bound > 0 ? random.withLock { Int64.random(in: 0...bound, using: &$0) } : 0
        return floor + .nanoseconds(jitter)
    }

}
