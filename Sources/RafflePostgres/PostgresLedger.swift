import Foundation
public import Logging
import PostgresNIO
import RaffleCore
public import RaffleLedger
public import RaffleWire
import Synchronization

/// A ledger in PostgreSQL, shared by every raffled node that names the same database: one entry per
/// user per raffle across all of them (the table's primary key decides), acknowledged only once
/// PostgreSQL committed it.
///
/// Entry path (docs/SCALING.md): `admit` runs on an event loop and never waits. It validates the
/// batch, answers what is certain at once (a closed raffle; a retry of an entry this node saw
/// stored), and queues the rest; the ack is reserved in the reply queue (`Admission.deferred`).
/// Group commit: the batches admitted on all event loops coalesce into one statement per round trip
/// (`unnest` of three arrays, `INSERT … ON CONFLICT DO NOTHING RETURNING`), with at most
/// `roundsInFlight` statements out; a round starts when one returns, taking everything that arrived
/// meanwhile. Each entry is `accepted` if this insert created it, `already_entered` otherwise.
///
/// Close races entries safely: each round locks the rows of the raffles it inserts into with
/// `FOR SHARE` and checks they are open; closing is one `UPDATE` of that row, which waits for the
/// rounds holding it and makes every later round see the raffle closed.
public final class PostgresLedger: Ledger, Sendable {
    let configuration: PostgresLedgerConfiguration
    let client: PostgresClient
    let logger: Logger
    let state = Guarded()
    private let runner: Mutex<Task<Void, Never>?>
    private let monitor: Mutex<Task<Void, Never>?>

    /// Connects, creates or migrates the schema (`raffled` in the database), and loads the raffles.
    /// - Throws: `LedgerError(.unavailable)` when PostgreSQL cannot be reached or the schema is newer
    ///   than this build.
    public static func connect(_ configuration: PostgresLedgerConfiguration, logger: Logger) async throws(LedgerError) -> PostgresLedger {
        let ledger = PostgresLedger(configuration: configuration, logger: logger)
        do {
            // The client retries a refused connection forever: bound the start.
            try await ledger.withTimeout(limit: configuration.startTimeout) {
                try await Schema.migrate(ledger.client, logger: logger)
                try await ledger.loadRaffles(ids: nil)
            }
        } catch {
            ledger.shutdown()
            throw LedgerError(.unavailable, "cannot use PostgreSQL at \(configuration.target): \(explain(error))")
        }
        ledger.startMonitor()
        return ledger
    }

    private init(configuration: PostgresLedgerConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
        // The pool logs every failed connection attempt at info: keep its background quieter than ours.
        var background = logger
        background.logLevel = max(logger.logLevel, .warning)
        client = PostgresClient(configuration: configuration.client, backgroundLogger: background)
        let client = self.client
        runner = Mutex(Task { await client.run() })
        monitor = Mutex(nil)
    }

    // MARK: - Entry path

    public func admit(_ batch: EntryBatchView, now: Int64, outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Admission {
        let n = batch.count
        guard outcomes.count >= n else { return .unavailable("outcome buffer too small") }
        let (admission, started) = state.withLock { s -> (Admission, Round?) in
            if let stop = s.refusal { return (.unavailable(stop), nil) }
            let id = batch.raffleID
            let cached = s.raffles[id]
            // A raffle this node has not seen yet (made on another node): its ticket limit is
            // checked when the round has loaded it.
            var undecided = batch.validate(maxTicketsPerEntry: cached?.spec.maxTicketsPerUser ?? .max, into: outcomes)
            if let cached {
                if let phase = cached.certainPhase(now: now) {
                    for i in 0..<n where outcomes[i] == .accepted { outcomes[i] = phase }
                    return (.processed(accepted: 0, commit: CommitPoint(lsn: 0)), nil)
                }
                for i in 0..<n where outcomes[i] == .accepted && cached.known.contains(batch.userID(at: i)) {
                    outcomes[i] = .alreadyEntered
                    undecided -= 1
                }
                if undecided == 0 { return (.processed(accepted: 0, commit: CommitPoint(lsn: 0)), nil) }
            }
            // A batch of a raffle this node does not know goes to PostgreSQL even with no valid entry:
            // only it can say whether the raffle exists.
            let waiting = s.admitted &- s.decided
            if waiting + UInt64(undecided) > UInt64(configuration.maxPendingEntries) {
                return (.unavailable("PostgreSQL is behind: \(waiting) entries wait for it; retry shortly"), nil)
            }
            let ticket = s.nextTicket
            s.nextTicket &+= 1
            s.pending.add(ticket: ticket, batch: batch, outcomes: UnsafeBufferPointer(rebasing: outcomes[0..<n]), undecided: undecided)
            s.admitted &+= UInt64(undecided)
            guard s.inFlight < configuration.roundsInFlight else { return (.deferred(ticket: ticket), nil) }
            s.inFlight += 1
            return (.deferred(ticket: ticket), s.takeRound())
        }
        if let started { launch(started) }
        return admission
    }

    public func isDurable(_ point: CommitPoint) -> Bool { point.lsn == 0 || state.withLock { $0.rounds >= point.lsn } }

    public func resolve(ticket: UInt64, into outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Resolution? {
        state.withLock { s -> Resolution? in
            guard let done = s.resolved.removeValue(forKey: ticket) else { return nil }
            if case .decided = done.resolution {
                for i in done.outcomes.indices where i < outcomes.count { outcomes[i] = done.outcomes[i] }
            }
            return done.resolution
        }
    }

    public func backlog() -> (pending: UInt64, durable: UInt64) {
        state.withLock { s in ((s.admitted &- s.decided) &* 16, s.decided &* 16) }
    }

    public func onCommit(_ callback: @escaping @Sendable (Result<CommitPoint, LedgerError>) -> Void) {
        state.withLock { $0.listeners.append(callback) }
    }

    public var failureReason: String? { state.withLock { $0.unreachable } }

    public var durability: LedgerDurability { .postgresql }

    public func stats() -> LedgerStats {
        state.withLock { s in
            let knownBytes = s.raffles.values.reduce(0) { $0 + $1.known.memoryBytes }
            return LedgerStats(
                raffles: s.raffles.count, entries: s.stored, indexBytes: knownBytes,
                indexBytesPerEntry: s.knownCount == 0 ? 0 : Double(knownBytes) / Double(s.knownCount),
                logAppendedBytes: s.admitted &* 16, logDurableBytes: s.decided &* 16, commits: s.rounds, durability: "postgresql")
        }
    }

    @discardableResult
    public func shutdown() -> String? {
        let (failure, waiting) = state.withLock { s -> (String?, [Round.Batch]) in
            s.stopped = true
            let waiting = s.pending.batches
            s.pending = Round()
            for batch in waiting { s.resolved[batch.ticket] = (.failed("the server is shutting down"), [], s.rounds) }
            return (s.unreachable, waiting)
        }
        if !waiting.isEmpty { notify() }
        monitor.withLock { $0?.cancel() }
        runner.withLock { $0?.cancel() }
        return failure
    }

    // MARK: - Group commit

    private func launch(_ round: Round) {
        Task { await self.commitRounds(first: round) }
    }

    /// Runs `round`, then every round that gathered meanwhile, until none waits.
    private func commitRounds(first: Round) async {
        var round = first
        while true {
            let result = await commit(round)
            let next: Round? = state.withLock { s -> Round? in
                s.finish(round, result, knownLimit: configuration.knownEntriesLimit)
                if s.pending.batches.isEmpty || s.refusal != nil {
                    s.inFlight -= 1
                    return nil
                }
                return s.takeRound()
            }
            notify()
            guard let next else { return }
            round = next
        }
    }

    /// Calls the commit listeners: resolutions are ready.
    func notify() {
        let (listeners, point) = state.withLock { s in (s.listeners, CommitPoint(lsn: s.rounds)) }
        for listener in listeners { listener(.success(point)) }
    }

    private func startMonitor() {
        // While PostgreSQL is marked unreachable, probe it once a second; the first answer clears the
        // mark (new batches are refused meanwhile, so nothing else would find out).
        let task = Task { [weak self] in
            while !Task.isCancelled {
                do { try await Task.sleep(for: .seconds(1)) } catch { return }
                guard let self, self.state.withLock({ $0.unreachable != nil && !$0.stopped }) else { continue }
                do {
                    _ = try await self.withTimeout { try await self.client.query("SELECT 1", logger: self.logger).collect() }
                    self.state.withLock { $0.unreachable = nil }
                    self.logger.notice("PostgreSQL answers again: taking entries")
                } catch {
                    self.logger.debug("PostgreSQL still unreachable: \(explain(error))")
                }
            }
        }
        monitor.withLock { $0 = task }
    }

    /// Runs `work`, failing after `limit` (default: `roundTimeout`). The caller is answered at the
    /// limit even if `work` ignores cancellation (a connection-pool lease waiting through a
    /// PostgreSQL restart did): the work is cancelled and left to end on its own, its result dropped.
    /// A statement that commits after its batches were answered UNAVAILABLE is harmless: nothing was
    /// acknowledged, and a retry is answered `already_entered`.
    func withTimeout<T: Sendable>(limit: Duration? = nil, _ work: @escaping @Sendable () async throws -> T) async throws -> T {
        let limit = limit ?? configuration.roundTimeout
        let gate = ResumeOnce<T>()
        return try await withCheckedThrowingContinuation { continuation in
            gate.set(continuation)
            let worker = Task {
                let result: Result<T, any Error>
                do { result = .success(try await work()) } catch { result = .failure(error) }
                gate.take()?.resume(with: result)
            }
            Task {
                try? await Task.sleep(for: limit)
                guard let waiting = gate.take() else { return }
                worker.cancel()
                waiting.resume(throwing: LedgerError(.unavailable, "PostgreSQL did not answer within \(limit) (is it running, and reachable from here?)"))
            }
        }
    }
}

/// A continuation resumed by whichever comes first: the work or the timer.
final class ResumeOnce<T: Sendable>: Sendable {
    private let continuation = Mutex<CheckedContinuation<T, any Error>?>(nil)

    func set(_ c: CheckedContinuation<T, any Error>) { continuation.withLock { $0 = c } }

    /// The continuation, to the first caller only.
    func take() -> CheckedContinuation<T, any Error>? { continuation.withLock { $0.take() } }
}

extension PostgresLedgerConfiguration {
    /// `user@host:port/database` (no password), for messages.
    public var target: String {
        "\(client.username)@\(client.host ?? client.unixSocketPath ?? "?"):\(client.port ?? 5432)/\(client.database ?? client.username)"
    }
}

/// A PostgreSQL error said in one line: the server's message and SQLSTATE, or the connection problem.
func explain(_ error: any Error) -> String {
    if let error = error as? PSQLError {
        if let info = error.serverInfo, let message = info[.message] {
            return "\(message) (SQLSTATE \(info[.sqlState] ?? "?"))"
        }
        return "\(error.code)" + (error.underlying.map { ": \($0)" } ?? "")
    }
    if let error = error as? LedgerError { return error.message }
    return "\(error)"
}
