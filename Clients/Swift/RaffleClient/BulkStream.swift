public import RaffleWire

/// One long-lived entries stream for a bulk partner: many batches on one HTTP/2 request, acks
/// matched by request id, at most `streamWindow` batches in flight, and resumption after a lost
/// connection.
///
/// ```swift
/// let stream = client.bulkStream(raffle: 7)
/// let source = PartnerFile(path)                          // an actor handing out [Entry] batches
/// try await stream.send(batches: { await source.next(1_000) }) { batch, outcomes in
///     await report.add(outcomes)                          // called as each batch is durable
/// }
/// await stream.close()
/// ```
///
/// `send` returns a batch's outcomes once the server has made it durable. If the connection drops,
/// every batch not yet acknowledged is written again on a new stream (after backoff), so nothing is
/// lost; nothing is doubled either, because the server keeps one entry per user per raffle — entries
/// of a batch whose ack was lost come back `already_entered` on the re-send. Throttled batches are
/// re-sent after the server's retry-after; retryable errors after backoff; both count against the
/// client's retry budget. Each batch has the client's `deadline`.
public final class BulkStream: Sendable {
    /// The raffle every batch goes to.
    public let raffle: UInt64
    private let core: Core
    private let driver: Task<Void, Never>

    init(client: RaffleClient, raffle: UInt64) {
        self.raffle = raffle
        let (signals, wake) = AsyncStream<Void>.makeStream(bufferingPolicy: .bufferingNewest(1))
        let core = Core(client: client, window: max(client.configuration.streamWindow, 1), wake: wake)
        self.core = core
        driver = Task { await core.drive(signals: signals) }
    }

    deinit { driver.cancel() }

    /// Batches sent and not yet acknowledged (or failed).
    public var inFlight: Int { core.state.withLock { $0.slots } }

    /// Streams opened so far (1 + reconnects).
    public var streamsOpened: Int { core.state.withLock { $0.streamsOpened } }

    /// Batches the server answered `throttled` (each went back at its retry-after), by reason.
    public var throttled: [ThrottleReason: Int] { core.state.withLock { $0.throttled } }

    /// Sends every batch `next` hands out (nil: no more) with the window full — `streamWindow`
    /// senders, each taking the next batch as its previous one is acknowledged, so at most that many
    /// batches are read ahead and in flight (memory stays bounded whatever the input's size) — and
    /// calls `onAck` with each batch and its outcomes once durable. `next` is called from several
    /// tasks at once (an actor is the natural source). Stops at the first error, which it throws.
    public func send(
        batches next: @escaping @Sendable () async throws -> [Entry]?,
        onAck: @escaping @Sendable ([Entry], [EntryOutcome]) async -> Void
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<core.window {
                group.addTask {
                    while let batch = try await next() {
                        let outcomes = try await self.send(batch)
                        await onAck(batch, outcomes)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    /// Sends one batch on the stream and returns its outcomes, one per entry, once durable. Waits
    /// for a window slot first.
    /// - Throws: `RaffleClientError` — a non-retryable server error for this batch, the deadline,
    ///   the retry budget, or `.invalidRequest` after `close()`.
    public func send(_ entries: [Entry]) async throws(RaffleClientError) -> [EntryOutcome] {
        guard !entries.isEmpty else { throw RaffleClientError(.invalidRequest, "a batch needs at least one entry") }
        let client = core.client
        let id = client.requestID()
        let frame: [UInt8]
        do { frame = try FrameEncoder.encode(Frame(requestID: id, flags: client.frameFlags, body: .entryBatch(raffleID: raffle, entries: entries))) } catch {
            throw RaffleClientError(.invalidRequest, "cannot encode the batch: \(error)")
        }
        try await core.acquire()
        client.budget.deposit()
        let core = self.core
        let deadline = client.configuration.deadline
        let result = await withTaskGroup(of: Result<[EntryOutcome], RaffleClientError>?.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    core.register(id: id, frame: frame, count: entries.count, continuation: continuation)
                }
            }
            group.addTask {
                try? await Task.sleep(for: deadline)
                if !Task.isCancelled { core.expire(id: id, after: deadline) }
                return nil
            }
            var outcome: Result<[EntryOutcome], RaffleClientError> = .failure(RaffleClientError(.deadlineExceeded, "no ack"))
            for await next in group {
                if let next {
                    outcome = next
                    break
                }
            }
            group.cancelAll()
            return outcome
        }
        return try result.get()
    }

    /// Waits for every batch in flight to be answered, then ends the stream. Later `send`s fail.
    public func close() async {
        await core.drain()
        core.shut()
        driver.cancel()  // ends a backoff sleep at once
        _ = await driver.value
    }

    /// The shared state and the one task that owns the connection.
    final class Core: Sendable {
        struct Pending {
            var frame: [UInt8]
            var count: Int
            var continuation: CheckedContinuation<Result<[EntryOutcome], RaffleClientError>, Never>
            var backoff: Backoff.Iterator
        }

        struct State {
            var pending: [UInt64: Pending] = [:]
            /// Window slots taken (batches registered or about to be).
            var slots = 0
            var slotWaiters: [CheckedContinuation<Bool, Never>] = []
            var drainWaiters: [CheckedContinuation<Void, Never>] = []
            var stream: (any FrameStream)?
            var streamsOpened = 0
            var throttled: [ThrottleReason: Int] = [:]
            /// Batches answered (acked or failed for good), to tell a stream that made progress from one
            /// that ended at once.
            var answered = 0
            /// Why the last stream could not be opened or ended, for deadline errors.
            var lastFailure: RaffleClientError?
            var closed = false
        }

        let client: RaffleClient
        let window: Int
        let wake: AsyncStream<Void>.Continuation
        let state = Locked(State())

        init(client: RaffleClient, window: Int, wake: AsyncStream<Void>.Continuation) {
            self.client = client
            self.window = window
            self.wake = wake
        }

        /// Takes a window slot, waiting for one if all are taken. A released slot is handed straight
        /// to the oldest waiter, so no wake-up is lost.
        func acquire() async throws(RaffleClientError) {
            let granted = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                let now: Bool? = state.withLock { s in
                    if s.closed { return false }
                    if s.slots < window {
                        s.slots += 1
                        return true
                    }
                    s.slotWaiters.append(continuation)
                    return nil
                }
                if let now { continuation.resume(returning: now) }
            }
            if !granted { throw RaffleClientError(.invalidRequest, "the bulk stream is closed") }
        }

        /// Gives a slot back (to the next waiter, if any).
        func release() {
            let (next, drained) = state.withLock { s -> (CheckedContinuation<Bool, Never>?, [CheckedContinuation<Void, Never>]) in
                if !s.slotWaiters.isEmpty { return (s.slotWaiters.removeFirst(), []) }
                s.slots -= 1
                guard s.slots == 0 else { return (nil, []) }
                defer { s.drainWaiters.removeAll() }
                return (nil, s.drainWaiters)
            }
            next?.resume(returning: true)
            for d in drained { d.resume() }
        }

        func register(
            id: UInt64, frame: [UInt8], count: Int, continuation: CheckedContinuation<Result<[EntryOutcome], RaffleClientError>, Never>
        ) {
            let closed = state.withLock { s -> Bool in
                if s.closed { return true }
                s.pending[id] = Pending(frame: frame, count: count, continuation: continuation, backoff: client.configuration.backoff.makeIterator())
                s.stream?.write(frame)
                return false
            }
            if closed {
                continuation.resume(returning: .failure(RaffleClientError(.invalidRequest, "the bulk stream is closed")))
                release()
            } else {
                wake.yield()
            }
        }

        /// Ends batch `id` with `result`, if it is still pending; frees its slot.
        func finish(id: UInt64, _ result: Result<[EntryOutcome], RaffleClientError>) {
            let removed = state.withLock { s -> Pending? in
                guard let p = s.pending.removeValue(forKey: id) else { return nil }
                s.answered += 1
                return p
            }
            guard let p = removed else { return }
            p.continuation.resume(returning: result)
            release()
        }

        func expire(id: UInt64, after deadline: Duration) {
            let last = state.withLock { $0.lastFailure }
            finish(id: id, .failure(RaffleClientError(.deadlineExceeded, "batch \(id) not acknowledged within \(deadline)", underlying: last)))
        }

        /// Writes batch `id` again after `delay`. A retryable error spends the retry budget; a throttled
        /// batch does not — the server chose the time, and going back then does not hammer it (the
        /// deadline still bounds the wait).
        func resend(id: UInt64, after delay: Duration, because reason: RaffleClientError, spendsBudget: Bool) {
            state.withLock { $0.lastFailure = reason }
            guard !spendsBudget || client.budget.withdraw(now: .now) else {
                finish(id: id, .failure(RaffleClientError(.retryBudgetExhausted, "retry budget exhausted: not re-sending batch \(id)", underlying: reason)))
                return
            }
            Task {
                try? await Task.sleep(for: delay)
                self.state.withLock { s in
                    if let frame = s.pending[id]?.frame { s.stream?.write(frame) }
                }
            }
        }

        func drain() async {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let done = state.withLock { s -> Bool in
                    if s.slots == 0 { return true }
                    s.drainWaiters.append(continuation)
                    return false
                }
                if done { continuation.resume() }
            }
        }

        /// Refuses new batches, fails the waiting ones, ends the request body.
        func shut() {
            let (stream, waiters, pending) = state.withLock { s in
                s.closed = true
                defer {
                    s.slotWaiters.removeAll()
                    s.pending.removeAll()
                }
                return (s.stream, s.slotWaiters, s.pending)
            }
            for w in waiters { w.resume(returning: false) }
            for (_, p) in pending { p.continuation.resume(returning: .failure(RaffleClientError(.invalidRequest, "the bulk stream was closed"))) }
            stream?.finish()
            wake.finish()
        }

        private var hasWork: Bool { state.withLock { !$0.closed && !$0.pending.isEmpty } }

        /// The connection's owner: opens a stream when there is work, writes every pending batch on
        /// it (in request-id order), reads acks until it ends, and starts over (after backoff) while
        /// batches remain.
        func drive(signals: AsyncStream<Void>) async {
            var backoff = client.configuration.backoff.makeIterator()
            var rng = SystemRandomNumberGenerator()
            for await _ in signals {
                while hasWork && !Task.isCancelled {
                    let stream: any FrameStream
                    do { stream = try await client.transport.openStream(authorization: client.authorization) } catch {
                        let failure = error as? RaffleClientError ?? RaffleClientError(.connectionFailed, "cannot open a stream: \(error)")
                        state.withLock { $0.lastFailure = failure }
                        try? await Task.sleep(for: backoff.next(using: &rng))
                        continue
                    }
                    let attached = state.withLock { s -> Int? in
                        guard !s.closed else { return nil }
                        s.stream = stream
                        s.streamsOpened += 1
                        for id in s.pending.keys.sorted() { if let f = s.pending[id]?.frame { stream.write(f) } }
                        return s.answered
                    }
                    guard let answeredBefore = attached else {
                        stream.finish()
                        break
                    }
                    await read(stream)
                    let progressed = state.withLock { s -> Bool in
                        s.stream = nil
                        let progressed = s.answered > answeredBefore
                        if !progressed { s.lastFailure = RaffleClientError(.connectionFailed, "the stream ended before any batch on it was answered") }
                        return progressed
                    }
                    // A stream that ended without answering anything (refused, reset): back off before
                    // the next one rather than spin.
                    if progressed {
                        backoff = client.configuration.backoff.makeIterator()
                    } else if hasWork {
                        try? await Task.sleep(for: backoff.next(using: &rng))
                    }
                }
                if state.withLock({ $0.closed }) { break }
            }
        }

        /// Reads reply frames until the stream ends.
        private func read(_ stream: any FrameStream) async {
            let decoder = FrameDecoder(receiver: .client)
            var buffer: [UInt8] = []
            for await chunk in stream.replies {
                buffer.append(contentsOf: chunk)
                let frames: [Frame]
                do {
                    let (decoded, consumed) = try decoder.decodeFrames(buffer)
                    frames = decoded
                    buffer.removeFirst(consumed)
                } catch {
                    stream.finish()
                    return  // unreadable reply: drop the stream; pending batches go out again on a new one
                }
                for frame in frames { handle(frame) }
            }
        }

        private func handle(_ frame: Frame) {
            let id = frame.requestID
            switch frame.body {
            case .batchAck(_, let outcomes):
                let count = state.withLock { $0.pending[id]?.count }
                guard let count else { return }  // a late duplicate ack
                if outcomes.count == count {
                    finish(id: id, .success(outcomes))
                } else {
                    finish(id: id, .failure(RaffleClientError(.invalidResponse, "ack has \(outcomes.count) outcomes for \(count) entries")))
                }
            case .throttled(let ms, let reason):
                state.withLock { $0.throttled[reason, default: 0] += 1 }
                resend(id: id, after: client.retryAfterDelay(ms), because: RaffleClientError(.throttled, "throttled (\(reason)) for \(ms) ms"), spendsBudget: false)
            case .error(let code, let message):
                let error = RaffleClientError(.server(code), "\(code): \(message)")
                if code.isRetryable {
                    let delay = state.withLock { s -> Duration? in
                        var rng = SystemRandomNumberGenerator()
                        return s.pending[id]?.backoff.next(using: &rng)
                    }
                    if let delay { resend(id: id, after: delay, because: error, spendsBudget: true) }
                } else {
                    finish(id: id, .failure(error))
                }
            default:
                break
            }
        }
    }
}

extension RaffleClient {
    /// Opens a long-lived stream of batches to `raffle` for bulk ingest (see `BulkStream`).
    public func bulkStream(raffle: UInt64) -> BulkStream {
        BulkStream(client: self, raffle: raffle)
    }
}
