public import RaffleCore
public import RaffleWire

/// A point in the ledger's durable history: once the ledger reports it durable, everything that
/// happened before it (entries, raffle changes) survives a crash.
public struct CommitPoint: Hashable, Sendable, Comparable {
    /// Log sequence number (bytes of log up to this point).
    public var lsn: UInt64
    public init(lsn: UInt64) { self.lsn = lsn }
    public static func < (a: Self, b: Self) -> Bool { a.lsn < b.lsn }
}

/// The result of admitting one entry batch.
public enum Admission: Sendable, Hashable {
    /// Outcomes were written and are final; acknowledge once `commit` is durable. `accepted`
    /// entries were new. (The local ledger decides at admission.)
    case processed(accepted: Int, commit: CommitPoint)
    /// The batch was taken, but its outcomes are decided when it commits (a ledger shared by several
    /// nodes knows "already entered" only then): the server reserves the ack in order and asks
    /// `resolve(ticket:into:)` after each commit notification until it answers.
    case deferred(ticket: UInt64)
    /// No raffle with the batch's id.
    case unknownRaffle
    /// The ledger cannot make entries durable (storage failed, or shutting down).
    case unavailable(String)
}

/// How a deferred batch ended.
public enum Resolution: Sendable, Hashable {
    /// Committed: the outcomes were written (one per entry, in batch order); `accepted` were new.
    case decided(accepted: Int)
    /// Not committed: nothing of the batch is stored, and it must never be acknowledged.
    case failed(String)
    /// No raffle with the batch's id (a shared ledger may learn this only at commit).
    case unknownRaffle
}

/// How a ledger makes acknowledged entries durable (for `/healthz`, metrics and the
/// `raffled-durability` response header).
public enum LedgerDurability: String, Sendable, Codable, Hashable {
    /// The local log, `fdatasync`ed before each acknowledgement.
    case fsync
    /// The local log without a sync: acknowledged entries may be lost (experiments only).
    case none
    /// Committed by PostgreSQL (its WAL, `fsync` and replication settings).
    case postgresql
}

/// Why an admin operation failed.
public struct LedgerError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure.
    public enum Kind: Sendable, Hashable {
        case notFound, invalid, conflict, unavailable
    }
    public var kind: Kind
    public var message: String
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }
    public var description: String { message }
}

/// Counters a ledger reports for `/stats` and `/metrics`.
public struct LedgerStats: Sendable, Hashable, Codable {
    /// Raffles known.
    public var raffles: Int
    /// Entries stored, all raffles.
    public var entries: Int
    /// Bytes held by the dedupe indexes.
    public var indexBytes: Int
    /// `indexBytes / entries` (0 when empty).
    public var indexBytesPerEntry: Double
    /// Log bytes appended and durable.
    public var logAppendedBytes: UInt64
    public var logDurableBytes: UInt64
    /// Group commits (fdatasync calls) so far.
    public var commits: UInt64
    /// "fsync" or "none".
    public var durability: String
    /// Bytes of log segments on disk now (a local ledger; nil where there is none).
    public var logDiskBytes: UInt64?

    public init(
        raffles: Int, entries: Int, indexBytes: Int, indexBytesPerEntry: Double, logAppendedBytes: UInt64, logDurableBytes: UInt64,
        commits: UInt64, durability: String, logDiskBytes: UInt64? = nil
    ) {
        self.logDiskBytes = logDiskBytes
        self.raffles = raffles
        self.entries = entries
        self.indexBytes = indexBytes
        self.indexBytesPerEntry = indexBytesPerEntry
        self.logAppendedBytes = logAppendedBytes
        self.logDurableBytes = logDurableBytes
        self.commits = commits
        self.durability = durability
    }
}

/// The ledger: raffles, one entry per user per raffle, and their durability. Every transport talks
/// only to this interface (`RaffleServer.start(configuration:ledger:)`). `LocalLedger` keeps it in
/// memory with a local write-ahead log and decides each entry's outcome at admission
/// (`Admission.processed`); a ledger shared by several nodes decides at commit
/// (`Admission.deferred`, then `resolve(ticket:into:)`), and the server holds the ack, in order,
/// until it has. The tests prove the seam with such a ledger over every transport.
public protocol Ledger: AnyObject, Sendable {
    /// Admits a decoded batch: validates each entry, keeps one entry per user, records new entries,
    /// and writes one outcome per entry into `outcomes` (at least `batch.count` long). Called on an
    /// event loop; must not block on I/O and should not allocate per entry.
    func admit(_ batch: EntryBatchView, now: Int64, outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Admission

    /// A hint, before `admit`: the batch's entries are coming, start loading whatever admitting them
    /// will touch (the local ledger: each user's dedupe-index slot). No effect on outcomes; may do
    /// nothing (the default).
    func prefetch(_ batch: EntryBatchView)

    /// Whether `point` is durable now.
    func isDurable(_ point: CommitPoint) -> Bool

    /// The end of a deferred batch (`Admission.deferred`): nil while it is not committed yet; else
    /// its resolution, with the outcomes written into `outcomes` (at least the batch's count long)
    /// when decided. Called on an event loop after a commit notification; a resolved ticket is forgotten.
    func resolve(ticket: UInt64, into outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Resolution?

    /// How far durability lags behind admission, for backpressure: bytes (or the ledger's own unit)
    /// admitted and not yet durable, and the total made durable so far (its growth is the drain rate).
    func backlog() -> (pending: UInt64, durable: UInt64)

    /// Registers a callback run (on a ledger thread) whenever more becomes durable, or on failure.
    func onCommit(_ callback: @escaping @Sendable (Result<CommitPoint, LedgerError>) -> Void)

    // The admin and read calls are `async`: a shared ledger answers them with a database round trip.
    // They are called from tasks, never on an event loop; the local ledger answers at once.

    /// Creates a raffle with a fresh secret seed; returns it with the commit point to wait for.
    func createRaffle(_ spec: RaffleSpec, now: Int64) async -> Result<(RaffleInfo, CommitPoint), LedgerError>

    /// Closes a raffle (no more entries), reveals the seed and draws the winners. Idempotent.
    func closeRaffle(_ id: UInt64, now: Int64) async -> Result<(RaffleInfo, CommitPoint), LedgerError>

    /// Closes every open raffle whose closing time has passed; returns their ids.
    func closeDueRaffles(now: Int64) async -> [UInt64]

    /// One raffle, as of `now`.
    func raffle(_ id: UInt64, now: Int64) async throws(LedgerError) -> RaffleInfo?

    /// Every raffle, by id.
    func raffles(now: Int64) async throws(LedgerError) -> [RaffleInfo]

    /// Whether `userID` holds an entry in raffle `id` (nil: no such raffle).
    func hasEntry(userID: UInt64, raffle id: UInt64) async throws(LedgerError) -> Bool?

    /// The raffle's entries in canonical order (by user id), for export and verification.
    func entries(of id: UInt64) async throws(LedgerError) -> [Draw.Entry]?

    /// Counters.
    func stats() -> LedgerStats

    /// How acknowledged entries are made durable.
    var durability: LedgerDurability { get }

    /// Why the ledger stopped acknowledging for good (storage failure), or nil while healthy.
    var failureReason: String? { get }

    /// Why the ledger is refusing new entries for now (the disk is full), or nil. It recovers by
    /// itself; `onStall` is told when it begins and ends.
    var stallReason: String? { get }

    /// Registers a callback (on a ledger thread) told when a stall begins (why) and ends (nil).
    func onStall(_ callback: @escaping @Sendable (String?) -> Void)

    /// Registers a callback (on a ledger thread) told after each background checkpoint: what it
    /// wrote, or why it could not (nothing acknowledged is at risk then: the log still holds it all).
    func onCheckpoint(_ callback: @escaping @Sendable (Result<CheckpointReport, LedgerError>) -> Void)

    /// Flushes and stops. After this, `admit` answers `.unavailable`. Returns why the ledger had
    /// failed before stopping, if it had.
    @discardableResult
    func shutdown() -> String?
}

/// What one checkpoint wrote: a snapshot of every raffle and entry, so that start-up reads it and
/// replays only the log written after it.
public struct CheckpointReport: Sendable, Hashable {
    /// The log segment replay starts at; the segments before it were retired.
    public var segment: Int
    /// The checkpoint file.
    public var file: String
    /// Raffles in it.
    public var raffles: Int
    /// Entries in it.
    public var entries: Int
    /// Size of the file.
    public var bytes: Int
    /// Log segments removed because the checkpoint covers them.
    public var retiredSegments: Int
    /// How long writing it took.
    public var milliseconds: Double

    public init(segment: Int, file: String, raffles: Int, entries: Int, bytes: Int, retiredSegments: Int, milliseconds: Double) {
        self.segment = segment
        self.file = file
        self.raffles = raffles
        self.entries = entries
        self.bytes = bytes
        self.retiredSegments = retiredSegments
        self.milliseconds = milliseconds
    }
}

extension Ledger {
    /// Nothing to load ahead.
    public func prefetch(_ batch: EntryBatchView) {}

    /// A ledger that decides at admission has no deferred batches.
    public func resolve(ticket: UInt64, into outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Resolution? {
        .failed("this ledger defers no batch")
    }

    /// No backlog to report.
    public func backlog() -> (pending: UInt64, durable: UInt64) { (0, 0) }

    /// A ledger without a local disk never stalls.
    public var stallReason: String? { nil }

    public func onStall(_ callback: @escaping @Sendable (String?) -> Void) {}

    /// A ledger that keeps no checkpoints never reports one.
    public func onCheckpoint(_ callback: @escaping @Sendable (Result<CheckpointReport, LedgerError>) -> Void) {}
}
