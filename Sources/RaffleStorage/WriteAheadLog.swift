#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import RaffleCRC32C
import Synchronization

/// How the log makes records durable before they are acknowledged.
public enum Durability: String, Sendable, CaseIterable {
    /// `fdatasync` after every group of records (default): an acknowledged entry survives power loss.
    case fsync
    /// Write, never sync: for experiments only. Every output it affects names it.
    case none
}

/// Why the log stopped accepting records.
public struct LogFailure: Error, Hashable, Sendable, CustomStringConvertible {
    /// What failed, with the OS error.
    public var message: String
    /// The file system was full when a write was tried: the write was undone and may be retried
    /// (the log waits for space instead of failing).
    public var outOfSpace: Bool
    /// Creates a failure.
    public init(message: String, outOfSpace: Bool = false) {
        self.message = message
        self.outOfSpace = outOfSpace
    }
    public var description: String { message }
}

/// An append-only, segmented write-ahead log with group commit.
///
/// Callers on any thread `append` records into an in-memory pending buffer (under a lock) and get
/// the log sequence number (LSN, bytes appended so far) that covers them. One writer thread takes the
/// whole pending buffer, writes it, and issues **one `fdatasync` for everything that arrived
/// meanwhile** — group commit: when idle the writer sleeps on a condition and wakes on the next
/// append. After each commit it publishes `durableLSN` and calls the commit listeners; an entry may
/// be acknowledged once `durableLSN` covers its LSN.
///
/// With a `commitInterval`, a commit starts at most that often: when the previous one started less
/// than the interval ago, the writer waits out the rest before taking the pending buffer. A lone
/// append after a quiet spell is committed at once; under load each commit covers more records, so
/// the writer, the event loops it wakes and the sockets they write to do their per-commit work less
/// often. Measured (Bench/RESULTS.md, issue #15 item 3, point 1, "Pacing the group commit"): without
/// it, the faster the disk the *more* commits and the *less* throughput — `--durability none` took
/// 101–107k single-entry requests/s against 261–286k with a 1 ms interval.
///
/// On disk: files `wal-NNNNNNNN.log` in the data directory, each a sequence of records
/// `[u32 body length][u32 CRC32C(body)][body]` (little-endian); a new segment starts when the current
/// one passes `segmentBytes`, and the directory is fsynced when a segment is created.
///
/// A sync error stops the log for good: it stops acknowledging (listeners get the failure, later
/// appends are refused) rather than retry and risk acknowledging lost data — after a failed
/// `fdatasync` the kernel may have dropped the dirty pages, so a second sync that succeeds proves
/// nothing (PostgreSQL's fsync lesson). So does any write error but one: a full file system
/// (ENOSPC, EDQUOT). Then the partial write is cut off, the log *stalls* (stall listeners are told,
/// `isStalled`), keeps the batch unacknowledged and tries it again every `outOfSpaceRetry` until
/// space returns or the log is stopped.
public final class WriteAheadLog: Sendable {
    /// Called on the writer thread after each commit with the new durable LSN, or with the failure.
    public typealias CommitListener = @Sendable (Result<UInt64, LogFailure>) -> Void
    /// Called on the writer thread when a stall begins (with why) and when writing resumes (nil).
    public typealias StallListener = @Sendable (String?) -> Void
    /// How often a stalled log tries its batch again.
    public static let outOfSpaceRetry = Duration.milliseconds(100)
    /// How far ahead of small commits the writer writes zeros, so that a commit's `fdatasync` has no
    /// new length or blocks to record (1 MiB; each segment ends exactly at its records once the next
    /// one starts, and at a clean stop). See `WriterState.zeroChunk`.
    public static let defaultZeroFillBytes = WriterState.defaultZeroChunk

    /// Where the segments live.
    public let directory: String
    /// Durability mode.
    public let durability: Durability
    /// Size at which a new segment is started (default 64 MiB).
    public let segmentBytes: Int
    /// Least time between the starts of two commits (zero: the next commit starts as soon as the
    /// previous one ends and something is pending).
    public let commitInterval: Duration

    private struct Shared: ~Copyable {
        var pending: ByteArray
        var appendedLSN: UInt64
        var failure: LogFailure?
        var stopping = false
        var listeners: [CommitListener] = []
        var stallListeners: [StallListener] = []
        var stallReason: String?
        /// A new segment must start at this offset of `pending` (a checkpoint asked for it).
        var rollAt: Int?
        /// The latest segment started on request: its number and the LSN it starts at.
        var segmentStart: (segment: Int, lsn: UInt64)?
    }

    private let shared: Mutex<Shared>
    /// Mirrors of `appendedLSN` and "has failed", readable without the lock on the hot path.
    private let appendedMirror = Atomic<UInt64>(0)
    private let failedFlag = Atomic<Bool>(false)
    private let stalledFlag = Atomic<Bool>(false)
    private let wake = Condition()
    private let durable = Atomic<UInt64>(0)
    private let commits = Atomic<UInt64>(0)
    private let writer: Mutex<WriterState>
    private let finished = Condition()
    private let rolled = Condition()
    private let running = Atomic<Bool>(false)

    /// Creates a log appending after `replay` (which must have run on the same directory).
    init(directory: String, durability: Durability, segmentBytes: Int, commitInterval: Duration, writer: consuming WriterState, startLSN: UInt64) {
        self.directory = directory
        self.durability = durability
        self.segmentBytes = segmentBytes
        self.commitInterval = max(commitInterval, .zero)
        self.shared = Mutex(Shared(pending: ByteArray(capacity: 1 << 20), appendedLSN: startLSN))
        self.writer = Mutex(writer)
        durable.store(startLSN, ordering: .relaxed)
        appendedMirror.store(startLSN, ordering: .relaxed)
    }

    /// Bytes appended so far (including not yet durable).
    public var appendedLSN: UInt64 { appendedMirror.load(ordering: .acquiring) }
    /// Whether the log has failed (cheap; `failure` has the reason).
    public var hasFailed: Bool { failedFlag.load(ordering: .acquiring) }
    /// Bytes known to be on disk (with `.none`: written to the OS).
    public var durableLSN: UInt64 { durable.load(ordering: .acquiring) }
    /// Number of commits (fdatasync calls with `.fsync`) so far.
    public var commitCount: UInt64 { commits.load(ordering: .relaxed) }
    /// The failure that stopped the log, if any.
    public var failure: LogFailure? { shared.withLock { $0.failure } }
    /// Whether writes are waiting for disk space (cheap; `stallReason` says why).
    public var isStalled: Bool { stalledFlag.load(ordering: .acquiring) }
    /// Why writes are waiting (the file system is full), or nil.
    public var stallReason: String? { shared.withLock { $0.stallReason } }

    /// Registers a listener told when a stall begins and ends (on the writer thread).
    public func addStallListener(_ listener: @escaping StallListener) {
        shared.withLock { $0.stallListeners.append(listener) }
    }

    /// Registers a listener called after every commit (on the writer thread; hop to your own thread).
    public func addCommitListener(_ listener: @escaping CommitListener) {
        shared.withLock { $0.listeners.append(listener) }
    }

    /// Appends one record whose body `write` produces into the given writer, and returns the LSN that
    /// covers it, or the failure if the log has stopped. `write` runs under the log's lock: keep it
    /// short and allocation-free (it writes into preallocated memory).
    public func append(kind: RecordKind, _ write: (inout RecordWriter) -> Void) -> Result<UInt64, LogFailure> {
        let result: Result<UInt64, LogFailure> = shared.withLock { s in
            if let failure = s.failure { return .failure(failure) }
            if s.stopping { return .failure(LogFailure(message: "the log is shutting down")) }
            let start = s.pending.count
            s.pending.appendZeros(8)
            var w = RecordWriter(buffer: s.pending)
            w.u8(kind.rawValue)
            w.zeros(3)
            write(&w)
            s.pending = w.buffer
            let bodyLength = s.pending.count - start - 8
            let crc = s.pending.withBytes(from: start + 8, count: bodyLength) { CRC32C.extend(0, $0) }
            s.pending.setLE32(UInt32(bodyLength), at: start)
            s.pending.setLE32(crc, at: start + 4)
            s.appendedLSN += UInt64(bodyLength + 8)
            appendedMirror.store(s.appendedLSN, ordering: .releasing)
            return .success(s.appendedLSN)
        }
        wake.signalIfWaiting()
        return result
    }

    /// Asks for a new segment to start right after the records appended so far, and returns the LSN
    /// it will start at (nil when the log has failed or is stopping, or another request is pending).
    /// Call it under the same lock as the appends whose state you snapshot: then the segments before
    /// it hold exactly the records that state reflects. `waitForSegment(startingAt:)` says which
    /// segment it became.
    public func requestNewSegment() -> UInt64? {
        let lsn: UInt64? = shared.withLock { s in
            guard s.failure == nil, !s.stopping, s.rollAt == nil else { return nil }
            s.rollAt = s.pending.count
            return s.appendedLSN
        }
        if lsn != nil { wake.signal() }
        return lsn
    }

    /// Blocks until the segment requested at `lsn` exists (the records before it synced, its name
    /// durable) and returns its number, or the failure that stopped the log first. Blocking: call it
    /// from a thread of your own (the checkpoint thread), never an event loop.
    public func waitForSegment(startingAt lsn: UInt64) -> Result<Int, LogFailure> {
        var outcome: Result<Int, LogFailure>?
        rolled.wait {
            outcome = self.shared.withLock { s -> Result<Int, LogFailure>? in
                if let start = s.segmentStart, start.lsn == lsn { return .success(start.segment) }
                if let failure = s.failure { return .failure(failure) }
                if s.stopping && !self.running.load(ordering: .acquiring) { return .failure(LogFailure(message: "the log stopped")) }
                return nil
            }
            return outcome != nil
        }
        return outcome ?? .failure(LogFailure(message: "the log stopped"))
    }

    /// Removes the segments before `segment` (a checkpoint covers them) and makes that durable.
    /// Returns how many were removed. Safe while the writer runs: it only touches later segments.
    @discardableResult
    public func retireSegments(before segment: Int, files: any LogFileSystem) throws(LogFailure) -> Int {
        let old: [Int]
        do { old = try Self.segmentNumbers(in: directory).filter { $0 < segment } } catch {
            throw LogFailure(message: "\(error)")
        }
        guard !old.isEmpty else { return 0 }
        for n in old { files.remove(WriterState.path(directory, n)) }
        do throws(FileError) { try files.syncDirectory(directory) } catch {
            throw LogFailure(message: "fsync of directory \(directory) failed: \(error)")
        }
        return old.count
    }

    /// Starts the writer thread.
    public func start() {
        guard !running.exchange(true, ordering: .acquiringAndReleasing) else { return }
        let thread = Thread { [self] in
            BackgroundThread.configureCurrent(name: "raffled-wal")
            self.writerLoop()
        }
        thread.start()
    }

    /// Flushes everything appended, syncs, and stops the writer. Later appends are refused.
    /// Returns the failure, if the log failed.
    @discardableResult
    public func stop() -> LogFailure? {
        shared.withLock { $0.stopping = true }
        if running.load(ordering: .acquiring) {
            wake.signal()
            finished.wait { !self.running.load(ordering: .acquiring) }
        }
        writer.withLock { $0.close() }
        rolled.signal()
        return failure
    }

    /// How far a batch got: a commit tried again (after a full disk) goes on from here, so no
    /// record is written twice.
    private struct Progress {
        var written = 0
        var rolled = false
        var segment: Int?
    }

    /// Writes `batch` — starting a new segment at `rollAt` when asked — and (with `.fsync`) syncs it.
    private func commit(_ batch: borrowing ByteArray, upTo target: UInt64, rollAt: Int?, progress: inout Progress) -> Result<UInt64, LogFailure> {
        writer.withLock { w in
            do throws(LogFailure) {
                let all = UnsafeRawBufferPointer(start: batch.base, count: batch.count)
                if let rollAt, !progress.rolled {
                    if progress.written < rollAt {
                        try w.write(UnsafeRawBufferPointer(rebasing: all[progress.written..<rollAt]), segmentBytes: segmentBytes)
                        progress.written = rollAt
                    }
                    // An empty open segment already starts here.
                    if w.size > 0 { try w.roll() }
                    progress.rolled = true
                    progress.segment = w.segment
                }
                if progress.written < all.count {
                    try w.write(UnsafeRawBufferPointer(rebasing: all[progress.written...]), segmentBytes: segmentBytes)
                    progress.written = all.count
                }
                if durability == .fsync {
                    try w.sync()
                    w.dropSynced()
                }
                return .success(target)
            } catch {
                return .failure(error)
            }
        }
    }

    /// Enters (a reason) or leaves (nil) the stall, telling the stall listeners once each way.
    private func setStall(_ reason: String?) {
        let listeners: [StallListener]? = shared.withLock { s in
            guard (s.stallReason == nil) != (reason == nil) else { return nil }
            s.stallReason = reason
            return s.stallListeners
        }
        guard let listeners else { return }
        stalledFlag.store(reason != nil, ordering: .releasing)
        for listener in listeners { listener(reason) }
    }

    private func writerLoop() {
        var batch = ByteArray(capacity: 1 << 20)
        let clock = ContinuousClock()
        var lastStart = clock.now - commitInterval
        while true {
            wake.wait { self.shared.withLock { !$0.pending.isEmpty || $0.stopping || $0.rollAt != nil } }
            if commitInterval > .zero {
                // Pacing (see the type's comment): let more records gather instead of committing again
                // right away. Appends do not wake this sleep; it is never longer than the interval.
                let due = lastStart + commitInterval
                if clock.now < due && !shared.withLock({ $0.stopping }) { Self.sleep(until: due, clock) }
                lastStart = clock.now
            }
            let (target, stopping, listeners, rollAt): (UInt64, Bool, [CommitListener], Int?) = shared.withLock { s in
                swap(&s.pending, &batch)
                defer { s.rollAt = nil }
                return (s.appendedLSN, s.stopping, s.listeners, s.rollAt)
            }
            if !batch.isEmpty || rollAt != nil {
                var progress = Progress()
                var outcome = commit(batch, upTo: target, rollAt: rollAt, progress: &progress)
                // A full file system: the batch was not written (what was, is cut off). Wait for
                // space and try again; nothing of it is acknowledged meanwhile.
                while case .failure(let failure) = outcome, failure.outOfSpace {
                    setStall(failure.message)
                    if shared.withLock({ $0.stopping }) {
                        outcome = .failure(
                            LogFailure(message: "stopped while waiting for disk space: \(batch.count) bytes of records were never written, and none was acknowledged"))
                        break
                    }
                    usleep(UInt32(Self.outOfSpaceRetry.components.attoseconds / 1_000_000_000_000))
                    outcome = commit(batch, upTo: target, rollAt: rollAt, progress: &progress)
                }
                if case .success = outcome, isStalled { setStall(nil) }
                switch outcome {
                case .success(let lsn):
                    durable.store(lsn, ordering: .releasing)
                    commits.add(1, ordering: .relaxed)
                case .failure(let failure):
                    shared.withLock { $0.failure = failure }
                    failedFlag.store(true, ordering: .releasing)
                }
                if let rollAt, case .success = outcome, let segment = progress.segment {
                    let lsn = target - UInt64(batch.count - rollAt)
                    shared.withLock { $0.segmentStart = (segment, lsn) }
                }
                if rollAt != nil { rolled.signal() }
                batch.removeAll()
                for listener in listeners { listener(outcome) }
                if case .failure = outcome { break }
            }
            if stopping && shared.withLock({ $0.pending.isEmpty }) { break }
        }
        running.store(false, ordering: .releasing)
        finished.signal()
        rolled.signal()
    }
}

extension WriteAheadLog {
    /// Blocks the writer thread until `deadline` (a plain nanosleep: the writer has nothing else to do).
    fileprivate static func sleep(until deadline: ContinuousClock.Instant, _ clock: ContinuousClock) {
        let left = clock.now.duration(to: deadline)
        guard left > .zero else { return }
        var request = timespec(tv_sec: Int(left.components.seconds), tv_nsec: Int(left.components.attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}

/// Kinds of log record (the first byte of a record body).
public struct RecordKind: RawRepresentable, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Accepted entries of one batch: raffle id, count, then (user id u64, tickets u32) each.
    public static let entries = RecordKind(rawValue: 1)
    /// A raffle was created: raffle id, then its definition as JSON.
    public static let raffleCreated = RecordKind(rawValue: 2)
    /// A raffle was closed: raffle id, then the closing time (i64 ms since the epoch).
    public static let raffleClosed = RecordKind(rawValue: 3)
}

/// A small condition variable (pthread) for the writer thread. Waits re-check their predicate.
final class Condition: @unchecked Sendable {
    // @unchecked Sendable: the pthread mutex and condition are only touched through
    // pthread_mutex_lock/unlock and pthread_cond_wait/signal, which are thread-safe by contract;
    // the pointers are allocated once in init and freed in deinit, never reassigned.
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let cond = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)

    init() {
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(cond, nil)
    }

    deinit {
        pthread_cond_destroy(cond)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        cond.deallocate()
    }

    /// Set while a thread is (about to be) blocked in `wait`, so `signalIfWaiting` can skip the
    /// mutex and the futex call when the writer is busy anyway (the common case under load).
    private let sleeping = Atomic<Bool>(false)

    /// Blocks until `ready()` is true. `ready` must not call `signal`.
    func wait(until ready: () -> Bool) {
        pthread_mutex_lock(mutex)
        while true {
            // Announce first, then check: an appender that misses the flag appended before this
            // check (sequential consistency), so the check sees its work.
            sleeping.store(true, ordering: .sequentiallyConsistent)
            if ready() { break }
            pthread_cond_wait(cond, mutex)
        }
        sleeping.store(false, ordering: .sequentiallyConsistent)
        pthread_mutex_unlock(mutex)
    }

    /// Wakes the waiter if one is (about to be) blocked.
    func signalIfWaiting() {
        if sleeping.load(ordering: .sequentiallyConsistent) { signal() }
    }

    func signal() {
        pthread_mutex_lock(mutex)
        pthread_cond_broadcast(cond)
        pthread_mutex_unlock(mutex)
    }
}
