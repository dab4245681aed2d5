import Foundation
public import RaffleCore
public import RaffleStorage
public import RaffleWire
import Synchronization

/// Where and how the local ledger keeps its write-ahead log.
public struct LocalLedgerConfiguration: Sendable, Hashable {
    /// Data directory for the log's segments. Default `./raffle-data`.
    public var directory: String
    /// `.fsync` (default): acknowledge only what is on disk. `.none`: experiments only.
    public var durability: Durability
    /// Segment size. Default 64 MiB.
    public var segmentBytes: Int
    /// A checkpoint is written once this many bytes of log were appended since the last one (and at
    /// shutdown), so restart replays at most about this much log. Default 64 MiB; 0: never.
    public var checkpointBytes: Int
    /// Least time between the starts of two log commits (`WriteAheadLog.commitInterval`). Default
    /// zero (commit as soon as the previous commit ends); `raffled serve` uses 1 ms.
    public var commitInterval: Duration
    /// How far ahead of small commits the log writes zeros (`WriteAheadLog.defaultZeroFillBytes`,
    /// 1 MiB); 0: off (e.g. on a copy-on-write file system, where overwriting gains nothing).
    public var logZeroFillBytes: Int

    public init(
        directory: String = "./raffle-data", durability: Durability = .fsync, segmentBytes: Int = 64 << 20, checkpointBytes: Int = 64 << 20,
        commitInterval: Duration = .zero, logZeroFillBytes: Int = WriteAheadLog.defaultZeroFillBytes
    ) {
        self.directory = directory
        self.durability = durability
        self.segmentBytes = segmentBytes
        self.checkpointBytes = checkpointBytes
        self.commitInterval = commitInterval
        self.logZeroFillBytes = logZeroFillBytes
    }
}

/// A ledger kept in memory and made durable by a local write-ahead log (one node).
///
/// All state sits behind one mutex taken **once per batch** (not per entry): validate, dedupe, and
/// append the batch's new entries to the log's pending buffer happen in one critical section, so the
/// log's order is the index's order. A batch whose entries were all `already_entered` still waits for
/// the log position current at its admission — the earlier request that stored them may not be
/// durable yet, and "already entered" must not be said of an entry a crash could lose.
///
/// Restart is bounded by checkpoints (`LocalLedger+Checkpoint.swift`): every `checkpointBytes` of log
/// a background thread snapshots all raffles and entries to a file, and start-up reads the newest
/// one and replays only the log written after it.
///
/// `@unchecked Sendable`: every mutable field (`table` and the `RaffleRecord`s it holds) is read and
/// written only inside `lock.withLock`, except during `init`, before the ledger is shared.
public final class LocalLedger: Ledger, @unchecked Sendable {
    final class RaffleRecord {
        let id: UInt64
        let spec: RaffleSpec
        let seed: [UInt8]
        let commitment: String
        let index: DedupeIndex
        var users = ContiguousArray<UInt64>()
        var tickets = ContiguousArray<UInt32>()
        var ticketTotal: UInt64 = 0
        var closedAt: Int64?
        var draw: DrawResult?
        /// Entries read from the log at start-up, not yet deduplicated (`settleReplayed`).
        var replayedUsers = ContiguousArray<UInt64>()
        var replayedTickets = ContiguousArray<UInt32>()

        /// A raffle's record; `index` is `sizedIndex(spec)` made beforehand (default: made here).
        init(id: UInt64, spec: RaffleSpec, seed: [UInt8], index: DedupeIndex? = nil) {
            self.id = id
            self.spec = spec
            self.seed = seed
            commitment = Draw.commitment(seed: seed)
            // Sized once for the operator's expected count (spec.expectedEntries): no doubling
            // of the index or the entry list while a drop pours in.
            let expected = Self.expectedEntries(spec)
            self.index = index ?? Self.sizedIndex(spec)
            users.reserveCapacity(expected)
            tickets.reserveCapacity(expected)
        }

        static func expectedEntries(_ spec: RaffleSpec) -> Int {
            min(max(spec.expectedEntries ?? 0, 0), RaffleSpec.maxExpectedEntries)
        }

        /// An empty index with room for the spec's expected entries.
        static func sizedIndex(_ spec: RaffleSpec) -> DedupeIndex {
            DedupeIndex(capacity: max(expectedEntries(spec), 1_024))
        }

        @inline(__always)
        func add(_ user: UInt64, _ t: UInt32) {
            indexed &+= 1  // the entry path inserts into the index first
            users.append(user)
            tickets.append(t)
            ticketTotal &+= UInt64(t)
        }

        /// Entries at the front of `users` that the index already holds (a checkpoint's are added
        /// to the list first and to the index here, together with the log's).
        var indexed = 0

        /// Adds the entries replay collected and indexes everything not indexed yet, all at once
        /// (`DedupeIndex.insertAll`, the table sized once): the same list as adding the log's entries
        /// one by one in order. An id repeated within the checkpoint's own list is damage.
        func settleReplayed(checkpoint file: String?) throws {
            let fromCheckpoint = users.count - indexed
            if !replayedUsers.isEmpty {
                users.append(contentsOf: replayedUsers)
                tickets.append(contentsOf: replayedTickets)
                replayedUsers = []
                replayedTickets = []
            }
            guard users.count > indexed else { return }
            let repeated = users.withUnsafeBufferPointer { index.insertAll(UnsafeBufferPointer(rebasing: $0[indexed...])) }
            if let first = repeated.first, first < fromCheckpoint, let file {
                throw CheckpointDamage(file: file, reason: "raffle \(id): user \(users[indexed + first]) appears twice (or is 0)")
            }
            if !repeated.isEmpty {
                // Entries the log holds twice (never written so: admission deduplicates first): keep the first.
                var keep = indexed
                var r = 0
                for i in indexed..<users.count {
                    if r < repeated.count && repeated[r] == i - indexed {
                        r += 1
                        continue
                    }
                    users[keep] = users[i]
                    tickets[keep] = tickets[i]
                    keep += 1
                }
                users.removeLast(users.count - keep)
                tickets.removeLast(tickets.count - keep)
            }
            indexed = users.count
            ticketTotal = tickets.reduce(0) { $0 &+ UInt64($1) }
        }

        func state(now: Int64) -> RaffleState {
            if closedAt != nil { return .drawn }
            return now < spec.opensAt ? .scheduled : .open
        }

        func info(now: Int64) -> RaffleInfo {
            RaffleInfo(
                id: id, spec: spec, seedCommitment: commitment, state: state(now: now), entries: users.count,
                tickets: ticketTotal, draw: draw)
        }

        var entryList: [Draw.Entry] {
            Draw.canonical(zip(users, tickets).map { Draw.Entry(userID: $0, tickets: $1) })
        }
    }

    struct State {
        var raffles: [UInt64: RaffleRecord] = [:]
        var nextID: UInt64 = 1
    }

    let lock = Mutex<Void>(())
    var table: State
    /// The write-ahead log.
    public let log: WriteAheadLog
    /// What start-up replay found (the log after the checkpoint, when one was read).
    public let replay: ReplayReport
    /// What start-up read from a checkpoint (nil: none, the whole log was replayed), and the newer
    /// checkpoints it had to pass over as damaged.
    public let recovery: Recovery
    let files: any LogFileSystem
    let checkpoints: Checkpointer

    /// Opens (or creates) the ledger in `directory`: reads the newest checkpoint, replays the log
    /// after it, then starts the log writer (unless `startLog` is false: then nothing becomes durable
    /// until the caller runs `log.start()`, which lets tests hold commits back) and the checkpoint
    /// thread (every `checkpointBytes` of log; 0: never, not even at shutdown).
    /// - Throws: `LogCorruption` (file and offset), `CheckpointDamage` (no usable checkpoint and the
    ///   log before it is gone) or `LogFailure`; see `WriteAheadLog.open`.
    /// `files` is the file-system seam of the log and the checkpoints (tests inject storage faults through it).
    public init(
        directory: String, durability: Durability = .fsync, segmentBytes: Int = 64 << 20, checkpointBytes: Int = 64 << 20,
        commitInterval: Duration = .zero, logZeroFillBytes: Int = WriteAheadLog.defaultZeroFillBytes,
        files: any LogFileSystem = POSIXFileSystem(), startLog: Bool = true
    ) throws {
        let started = ContinuousClock.now
        let (checkpoint, recovery) = try Self.readCheckpoint(directory: directory, files: files)
        var replayed = checkpoint?.state ?? State()
        let (log, report) = try WriteAheadLog.open(
            directory: directory, durability: durability, segmentBytes: segmentBytes, commitInterval: commitInterval,
            zeroFillBytes: logZeroFillBytes, files: files,
            from: checkpoint.map { ($0.segment, $0.lsn) }
        ) { kind, reader in try Self.apply(kind, &reader, to: &replayed) }
        for record in replayed.raffles.values { try record.settleReplayed(checkpoint: recovery.checkpoint) }
        // Raffles closed before the restart: their published draw, recomputed unless the checkpoint had it.
        for record in replayed.raffles.values where record.closedAt != nil && record.draw == nil {
            record.draw = Self.draw(record, closedAt: record.closedAt ?? 0)
        }
        self.table = replayed
        self.log = log
        self.replay = report
        self.files = files
        var recovered = recovery
        recovered.milliseconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e15
            + Double((ContinuousClock.now - started).components.seconds) * 1e3
        self.recovery = recovered
        self.checkpoints = Checkpointer(every: startLog ? checkpointBytes : 0, coveredLSN: checkpoint?.lsn ?? 0, segment: checkpoint?.segment)
        if let segment = checkpoint?.segment {
            // What a crash kept of the last checkpoint's clean-up: segments and checkpoints it covers.
            try log.retireSegments(before: segment, files: files)
            try Checkpoint.removeOlder(than: segment, in: directory, files: files)
        }
        if startLog {
            log.start()
            checkpoints.start(self)
        }
    }

    /// Opens (or creates) the ledger `configuration` describes; see `init(directory:durability:segmentBytes:checkpointBytes:commitInterval:logZeroFillBytes:files:startLog:)`.
    public convenience init(_ configuration: LocalLedgerConfiguration, startLog: Bool = true) throws {
        try self.init(
            directory: configuration.directory, durability: configuration.durability, segmentBytes: configuration.segmentBytes,
            checkpointBytes: configuration.checkpointBytes, commitInterval: configuration.commitInterval,
            logZeroFillBytes: configuration.logZeroFillBytes, startLog: startLog)
    }

    /// Replays one log segment's bytes into an empty ledger as start-up does (records applied,
    /// closed raffles drawn), without files: the replay fuzz target's entry (this package only).
    /// Returns the valid prefix's length; throws what start-up would.
    package static func replay(segment bytes: UnsafeRawBufferPointer) throws -> Int {
        var state = State()
        let valid = try WriteAheadLog.scanSegment(bytes, isLast: true) { kind, reader in try apply(kind, &reader, to: &state) }
        for record in state.raffles.values { try record.settleReplayed(checkpoint: nil) }
        for record in state.raffles.values where record.closedAt != nil { record.draw = draw(record, closedAt: record.closedAt ?? 0) }
        return valid
    }

    static func apply(_ kind: RecordKind, _ r: inout RecordReader, to s: inout State) throws {
        switch kind {
        case .entries:
            guard let id = r.u64(), let raffle = s.raffles[id] else { throw replayError("entries for an unknown raffle") }
            // Collected here, deduplicated once replay is done (`settleReplayed`): inserting one at a
            // time was bound by a cache miss per entry.
            let n = r.remaining / 12
            guard let pairs = r.bytes(n * 12) else { break }
            for i in 0..<n {
                raffle.replayedUsers.append(UInt64(littleEndian: pairs.loadUnaligned(fromByteOffset: i * 12, as: UInt64.self)))
                raffle.replayedTickets.append(UInt32(littleEndian: pairs.loadUnaligned(fromByteOffset: i * 12 + 8, as: UInt32.self)))
            }
        case .raffleCreated:
            guard let id = r.u64() else { throw replayError("raffle record without id") }
            let json = r.rest()
            guard let saved = try? JSONDecoder().decode(SavedRaffle.self, from: Data(json)),
                let seed = Draw.bytes(hex: saved.seed)
            else { throw replayError("raffle \(id): unreadable definition") }
            s.raffles[id] = RaffleRecord(id: id, spec: saved.spec, seed: seed)
            s.nextID = max(s.nextID, id + 1)
        case .raffleClosed:
            guard let id = r.u64(), let at = r.i64(), let raffle = s.raffles[id] else { throw replayError("close of an unknown raffle") }
            raffle.closedAt = at
        default:
            throw replayError("unknown record kind \(kind.rawValue)")
        }
    }

    private static func replayError(_ message: String) -> LogFailure {
        LogFailure(message: "log replay: " + message)
    }

    struct SavedRaffle: Codable {
        var spec: RaffleSpec
        var seed: String
    }

    // MARK: - Entry path

    public func admit(_ batch: EntryBatchView, now: Int64, outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Admission {
        let n = batch.count
        guard outcomes.count >= n else { return .unavailable("outcome buffer too small") }
        if log.isStalled {
            // Nothing more is taken while the log waits for space: what waits is bounded, and the
            // client hears why at once (UNAVAILABLE: retry later).
            return .unavailable("the server's disk is full: entries are not being stored until space returns")
        }
        return lock.withLock { _ -> Admission in
            guard let raffle = table.raffles[batch.raffleID] else { return .unknownRaffle }
            let valid = batch.validate(maxTicketsPerEntry: raffle.spec.maxTicketsPerUser, into: outcomes)
            let phase = raffle.state(now: now)
            if phase != .open || now >= raffle.spec.closesAt {
                let outcome: EntryOutcome = phase == .scheduled ? .raffleNotOpen : .raffleClosed
                if valid > 0 { for i in 0..<n where outcomes[i] == .accepted { outcomes[i] = outcome } }
                return .processed(accepted: 0, commit: CommitPoint(lsn: 0))
            }
            var accepted = 0
            let index = raffle.index
            let ahead = 16  // entries of look-ahead: enough to overlap the cache misses of inserts (8 was measured slower)
            for i in 0..<min(ahead, n) { index.prefetch(batch.userID(at: i)) }
            for i in 0..<n {
                if i + ahead < n { index.prefetch(batch.userID(at: i + ahead)) }
                guard outcomes[i] == .accepted else { continue }
                if index.insert(batch.userID(at: i)) {
                    accepted &+= 1
                } else {
                    outcomes[i] = .alreadyEntered
                }
            }
            guard accepted > 0 else {
                if log.hasFailed { return .unavailable(log.failure?.message ?? "the log has failed") }
                return .processed(accepted: 0, commit: CommitPoint(lsn: log.appendedLSN))
            }
            let appended = log.append(kind: .entries) { w in
                w.u64(batch.raffleID)
                w.reserved(accepted * 12) { out in
                    var o = 0
                    for i in 0..<n where outcomes[i] == .accepted {
                        let user = batch.userID(at: i)
                        let t = batch.tickets(at: i)
                        out.storeBytes(of: user.littleEndian, toByteOffset: o, as: UInt64.self)
                        out.storeBytes(of: t.littleEndian, toByteOffset: o + 8, as: UInt32.self)
                        raffle.add(user, t)
                        o &+= 12
                    }
                    return o
                }
            }
            switch appended {
            case .success(let lsn): return .processed(accepted: accepted, commit: CommitPoint(lsn: lsn))
            case .failure(let failure): return .unavailable(failure.message)
            }
        }
    }

    /// Starts loading the index slots of (at most the first 16 of) the batch's users, so that the
    /// `admit` that follows finds them in cache: a single-entry request's insert otherwise waits for
    /// memory (~6 % of the server's time on the single-entry path, Bench/RESULTS.md). Takes the lock
    /// only to find the raffle's index; a raffle it cannot find is left to `admit` to refuse.
    public func prefetch(_ batch: EntryBatchView) {
        let n = min(batch.count, 16)
        guard n > 0 else { return }
        lock.withLock { _ in
            guard let index = table.raffles[batch.raffleID]?.index else { return }
            for i in 0..<n { index.prefetch(batch.userID(at: i)) }
        }
    }

    public func isDurable(_ point: CommitPoint) -> Bool { log.durableLSN >= point.lsn }

    public func onCommit(_ callback: @escaping @Sendable (Result<CommitPoint, LedgerError>) -> Void) {
        log.addCommitListener { result in
            callback(result.map(CommitPoint.init(lsn:)).mapError { LedgerError(.unavailable, $0.message) })
        }
    }

    // MARK: - Admin

    public func createRaffle(_ spec: RaffleSpec, now: Int64) -> Result<(RaffleInfo, CommitPoint), LedgerError> {
        if let problem = spec.problem { return .failure(LedgerError(.invalid, problem)) }
        let seed = Draw.makeSeed()
        let json: [UInt8]
        do {
            json = Array(try JSONEncoder().encode(SavedRaffle(spec: spec, seed: Draw.hex(seed))))
        } catch {
            return .failure(LedgerError(.invalid, "cannot encode raffle: \(error)"))
        }
        // A raffle sized for a drop gets its index's memory now, outside the lock (this runs in
        // the admin request's task, not on an event loop): the drop's inserts then find it backed
        // (see `DedupeIndex.prefault`). Without an expected count, the index starts small.
        let index = RaffleRecord.sizedIndex(spec)
        if spec.expectedEntries != nil { index.prefault() }
        return lock.withLock { _ in
            let id = table.nextID
            let appended = log.append(kind: .raffleCreated) { w in
                w.u64(id)
                w.bytes(json)
            }
            switch appended {
            case .failure(let failure):
                return .failure(LedgerError(.unavailable, failure.message))
            case .success(let lsn):
                table.nextID += 1
                let record = RaffleRecord(id: id, spec: spec, seed: seed, index: index)
                table.raffles[id] = record
                return .success((record.info(now: now), CommitPoint(lsn: lsn)))
            }
        }
    }

    public func closeRaffle(_ id: UInt64, now: Int64) -> Result<(RaffleInfo, CommitPoint), LedgerError> {
        // Close under the lock (no entry is admitted after), draw outside it (sorting a million
        // entries must not stall the entry path), publish under the lock.
        let closing: Result<(RaffleRecord, CommitPoint, Bool), LedgerError> = lock.withLock { _ in
            guard let raffle = table.raffles[id] else { return .failure(LedgerError(.notFound, "raffle \(id) does not exist")) }
            if raffle.closedAt != nil { return .success((raffle, CommitPoint(lsn: log.appendedLSN), false)) }
            let at = min(now, raffle.spec.closesAt)
            let appended = log.append(kind: .raffleClosed) { w in
                w.u64(id)
                w.i64(at)
            }
            switch appended {
            case .failure(let failure): return .failure(LedgerError(.unavailable, failure.message))
            case .success(let lsn):
                raffle.closedAt = at
                return .success((raffle, CommitPoint(lsn: lsn), true))
            }
        }
        switch closing {
        case .failure(let error):
            return .failure(error)
        case .success(let (raffle, point, fresh)):
            if fresh {
                let result = lock.withLock { _ in (raffle.entryList, raffle.closedAt ?? now) }
                let draw = Self.draw(entries: result.0, raffle: raffle, closedAt: result.1)
                lock.withLock { _ in raffle.draw = draw }
            } else {
                // Another caller may still be drawing; wait for it by drawing here if needed.
                let pending = lock.withLock { _ in raffle.draw == nil ? (raffle.entryList, raffle.closedAt ?? now) : nil }
                if let pending {
                    let draw = Self.draw(entries: pending.0, raffle: raffle, closedAt: pending.1)
                    lock.withLock { _ in if raffle.draw == nil { raffle.draw = draw } }
                }
            }
            return .success((lock.withLock { _ in raffle.info(now: now) }, point))
        }
    }

    static func draw(_ raffle: RaffleRecord, closedAt: Int64) -> DrawResult {
        draw(entries: raffle.entryList, raffle: raffle, closedAt: closedAt)
    }

    private static func draw(entries: [Draw.Entry], raffle: RaffleRecord, closedAt: Int64) -> DrawResult {
        let (hash, winners) = Draw.winners(entries: entries, seed: raffle.seed, count: raffle.spec.winners)
        return DrawResult(
            closedAt: closedAt, entryListHash: hash, seed: Draw.hex(raffle.seed), entries: entries.count,
            tickets: entries.reduce(0) { $0 + UInt64($1.tickets) }, winners: winners)
    }

    public func closeDueRaffles(now: Int64) -> [UInt64] {
        let due = lock.withLock { _ in table.raffles.values.filter { $0.closedAt == nil && $0.spec.closesAt <= now }.map(\.id) }
        return due.filter { if case .success = closeRaffle($0, now: now) { true } else { false } }
    }

    public func raffle(_ id: UInt64, now: Int64) -> RaffleInfo? {
        lock.withLock { _ in table.raffles[id]?.info(now: now) }
    }

    public func raffles(now: Int64) -> [RaffleInfo] {
        lock.withLock { _ in table.raffles.values.map { $0.info(now: now) } }.sorted { $0.id < $1.id }
    }

    public func hasEntry(userID: UInt64, raffle id: UInt64) -> Bool? {
        lock.withLock { _ in table.raffles[id]?.index.contains(userID) }
    }

    public func entries(of id: UInt64) -> [Draw.Entry]? {
        let raw = lock.withLock { _ -> (ContiguousArray<UInt64>, ContiguousArray<UInt32>)? in
            guard let r = table.raffles[id] else { return nil }
            return (r.users, r.tickets)
        }
        guard let raw else { return nil }
        return Draw.canonical(zip(raw.0, raw.1).map { Draw.Entry(userID: $0, tickets: $1) })
    }

    public func stats() -> LedgerStats {
        let (raffles, entries, indexBytes) = lock.withLock { _ in
            table.raffles.values.reduce((table.raffles.count, 0, 0)) { acc, r in (acc.0, acc.1 + r.users.count, acc.2 + r.index.memoryBytes) }
        }
        return LedgerStats(
            raffles: raffles, entries: entries, indexBytes: indexBytes,
            indexBytesPerEntry: entries == 0 ? 0 : Double(indexBytes) / Double(entries),
            logAppendedBytes: log.appendedLSN, logDurableBytes: log.durableLSN, commits: log.commitCount,
            durability: log.durability.rawValue, logDiskBytes: log.diskBytes)
    }

    public var failureReason: String? { log.failure?.message }

    public var stallReason: String? { log.isStalled ? log.stallReason : nil }

    public func onStall(_ callback: @escaping @Sendable (String?) -> Void) { log.addStallListener(callback) }

    public var durability: LedgerDurability { log.durability == .fsync ? .fsync : .none }

    /// Stops the checkpoint thread, writes a last checkpoint if the log moved on since the previous
    /// one (so the next start reads it instead of replaying), then flushes and stops the log.
    @discardableResult
    public func shutdown() -> String? {
        checkpoints.stop()
        if checkpoints.isEnabled, !log.hasFailed, !log.isStalled, log.appendedLSN > checkpoints.coveredLSN {
            _ = try? checkpoint()
        }
        return log.stop().map { "\($0)" }
    }

    /// Log bytes appended and not yet durable, and log bytes durable.
    public func backlog() -> (pending: UInt64, durable: UInt64) {
        let durable = log.durableLSN
        return (log.appendedLSN &- min(durable, log.appendedLSN), durable)
    }
}
