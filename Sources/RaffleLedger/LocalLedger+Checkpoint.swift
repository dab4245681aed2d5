import Foundation
public import RaffleCore
public import RaffleStorage
import Synchronization

/// Checkpoints of the local ledger: bounded restart.
///
/// A checkpoint is taken under the ledger's lock in O(raffles): the log is asked to start a new
/// segment right after the records appended so far, and each raffle's entry count is noted. Entries
/// only ever append, so the first `count` of each raffle's list stay as they are; they are copied
/// out under the lock a slice at a time (the entry path waits at most one slice) and streamed to
/// the file. Once the file is durable, the segments before the new one and older checkpoints are
/// removed: the retirement policy is "a segment lives until a durable checkpoint covers it".
///
/// Body (after `Checkpoint`'s header), little-endian:
/// `[u64 log LSN][u64 next raffle id][u32 raffles]` then per raffle
/// `[u64 id][u32 n][n bytes JSON definition and seed][u8 closed][i64 closed at]`
/// `[u32 n][n bytes JSON draw, or 0 bytes][u64 entries][entries × u64 user id][entries × u32 tickets]`.
extension LocalLedger {
    /// What start-up read.
    public struct Recovery: Sendable, Hashable {
        /// The checkpoint read, or nil (the whole log was replayed).
        public var checkpoint: String?
        /// Entries the checkpoint held.
        public var checkpointEntries = 0
        /// Newer checkpoints passed over, each with what was wrong.
        public var damaged: [String] = []
        /// From opening to ready (checkpoint, replay and the draws of closed raffles).
        public var milliseconds: Double = 0
    }

    struct LoadedCheckpoint {
        var state: State
        var segment: Int
        var lsn: UInt64
    }

    /// Reads the newest intact checkpoint whose log still follows it. A damaged one is passed over
    /// for an older one only if the segments after that older one are all still there; with none
    /// left, start-up replays the whole log if it begins at segment 1, and stops otherwise.
    static func readCheckpoint(directory: String, files: any LogFileSystem) throws -> (LoadedCheckpoint?, Recovery) {
        Checkpoint.removeUnfinished(in: directory, files: files)
        var recovery = Recovery()
        var firstDamage: (any Error)?
        let segments = Set((try? WriteAheadLog.segmentNumbers(in: directory)) ?? [])
        for segment in Checkpoint.segments(in: directory) {
            if firstDamage != nil && !segments.contains(segment) { continue }  // its log was retired
            do {
                let (state, lsn) = try Checkpoint.read(directory: directory, segment: segment) { body in
                    try decode(body, file: Checkpoint.path(directory, segment: segment))
                }
                recovery.checkpoint = Checkpoint.path(directory, segment: segment)
                recovery.checkpointEntries = state.raffles.values.reduce(0) { $0 + $1.users.count }
                return (LoadedCheckpoint(state: state, segment: segment, lsn: lsn), recovery)
            } catch {
                recovery.damaged.append("\(error)")
                firstDamage = firstDamage ?? error
            }
        }
        if let firstDamage, !segments.isEmpty, !segments.contains(1) {
            throw LogFailure(
                message: "\(firstDamage); no older checkpoint is usable and the log before it was retired. "
                    + "Restore the data directory from a backup (raffled backup).")
        }
        return (nil, recovery)
    }

    static func decode(_ body: UnsafeRawBufferPointer, file: String) throws -> (State, UInt64) {
        func damage(_ reason: String) -> CheckpointDamage { CheckpointDamage(file: file, reason: reason) }
        var r = RecordReader(body: body)
        guard let lsn = r.u64(), let nextID = r.u64(), let count = r.u32() else { throw damage("header cut short") }
        var state = State()
        state.nextID = nextID
        for _ in 0..<count {
            guard let id = r.u64(), let n = r.u32(), let json = r.bytes(Int(n)) else { throw damage("raffle header cut short") }
            guard let saved = try? JSONDecoder().decode(SavedRaffle.self, from: Data(json)), let seed = Draw.bytes(hex: saved.seed) else {
                throw damage("raffle \(id): unreadable definition")
            }
            guard let closed = r.u8(), let closedAt = r.i64(), let drawLength = r.u32(), let drawJSON = r.bytes(Int(drawLength)) else {
                throw damage("raffle \(id): state cut short")
            }
            guard let entries = r.u64(), entries <= UInt64(r.remaining / 12), let users = r.bytes(Int(entries) * 8),
                let tickets = r.bytes(Int(entries) * 4)
            else { throw damage("raffle \(id): entries cut short") }
            let n64 = Int(entries)
            let record = RaffleRecord(id: id, spec: saved.spec, seed: seed)
            record.users = ContiguousArray(unsafeUninitializedCapacity: n64) { buffer, initialized in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: users)
                initialized = n64
            }
            record.tickets = ContiguousArray(unsafeUninitializedCapacity: n64) { buffer, initialized in
                UnsafeMutableRawBufferPointer(buffer).copyMemory(from: tickets)
                initialized = n64
            }
            // (Little-endian hosts: the arrays are stored as they lie in memory.) The index is built
            // after replay, together with the log's entries (`settleReplayed`).
            if closed != 0 {
                record.closedAt = closedAt
                record.draw = drawLength == 0 ? nil : try? JSONDecoder().decode(DrawResult.self, from: Data(drawJSON))
            }
            guard state.raffles.updateValue(record, forKey: id) == nil else { throw damage("raffle \(id) appears twice") }
        }
        guard r.remaining == 0 else { throw damage("\(r.remaining) bytes after the last raffle") }
        return (state, lsn)
    }

    /// Writes a checkpoint now (the background thread does this every `checkpointBytes` of log, and
    /// shutdown once more), then retires the segments and checkpoints it covers. One at a time; the
    /// entry path keeps running. `onCheckpoint` listeners hear how it went. Blocking: call it from a
    /// thread of your own, never an event loop.
    @discardableResult
    public func checkpoint() throws(LogFailure) -> CheckpointReport {
        let outcome: Result<CheckpointReport, LogFailure>
        do throws(LogFailure) { outcome = .success(try writeCheckpoint()) } catch { outcome = .failure(error) }
        let told = outcome.mapError { LedgerError(.unavailable, $0.message) }
        for listener in checkpoints.listeners.withLock({ $0 }) { listener(told) }
        return try outcome.get()
    }

    private func writeCheckpoint() throws(LogFailure) -> CheckpointReport {
        try checkpoints.serially { () throws(LogFailure) -> (CheckpointReport, UInt64) in
            let started = ContinuousClock.now
            // Snapshot under the lock: the log position and each raffle's entry count.
            typealias Snap = (record: RaffleRecord, entries: Int, closedAt: Int64?, draw: DrawResult?)
            let snapshot: (lsn: UInt64, nextID: UInt64, raffles: [Snap])? = lock.withLock { _ in
                guard let lsn = log.requestNewSegment() else { return nil }
                let raffles = table.raffles.values.sorted { $0.id < $1.id }.map { ($0, $0.users.count, $0.closedAt, $0.draw) }
                return (lsn, table.nextID, raffles)
            }
            guard let snapshot else { throw log.failure ?? LogFailure(message: "the log is stopping or busy with another checkpoint") }
            let segment = try log.waitForSegment(startingAt: snapshot.lsn).get()
            let encoder = JSONEncoder()
            let slice = 1 << 16
            let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: slice * 8, alignment: 8)
            defer { staging.deallocate() }
            let bytes = try Checkpoint.write(directory: log.directory, segment: segment, files: files) { (w: inout CheckpointWriter) throws(LogFailure) in
                w.u64(snapshot.lsn)
                w.u64(snapshot.nextID)
                w.u32(UInt32(snapshot.raffles.count))
                for (record, entries, closedAt, draw) in snapshot.raffles {
                    let definition = (try? encoder.encode(SavedRaffle(spec: record.spec, seed: Draw.hex(record.seed)))) ?? Data()
                    let drawJSON = draw.flatMap { try? encoder.encode($0) } ?? Data()
                    w.u64(record.id)
                    w.u32(UInt32(definition.count))
                    definition.withUnsafeBytes { w.raw($0) }
                    w.u8(closedAt == nil ? 0 : 1)
                    w.i64(closedAt ?? 0)
                    w.u32(UInt32(drawJSON.count))
                    drawJSON.withUnsafeBytes { w.raw($0) }
                    w.u64(UInt64(entries))
                    for part in 0..<2 {
                        let width = part == 0 ? 8 : 4
                        var done = 0
                        while done < entries {
                            let n = min(slice, entries - done)
                            lock.withLock { _ in
                                if part == 0 {
                                    record.users.withUnsafeBytes { staging.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[(done * width)..<((done + n) * width)])) }
                                } else {
                                    record.tickets.withUnsafeBytes { staging.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[(done * width)..<((done + n) * width)])) }
                                }
                            }
                            w.raw(UnsafeRawBufferPointer(rebasing: staging[0..<(n * width)]))
                            done += n
                        }
                    }
                    try w.flush()
                }
            }
            try Checkpoint.removeOlder(than: segment, in: log.directory, files: files)
            let retired = try log.retireSegments(before: segment, files: files)
            let elapsed = ContinuousClock.now - started
            return (
                CheckpointReport(
                    segment: segment, file: Checkpoint.path(log.directory, segment: segment), raffles: snapshot.raffles.count,
                    entries: snapshot.raffles.reduce(0) { $0 + $1.entries }, bytes: bytes, retiredSegments: retired,
                    milliseconds: Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15),
                snapshot.lsn
            )
        }
    }

    public func onCheckpoint(_ callback: @escaping @Sendable (Result<CheckpointReport, LedgerError>) -> Void) {
        checkpoints.listeners.withLock { $0.append(callback) }
    }
}

/// The checkpoint thread and its bookkeeping: one checkpoint at a time, one every `every` bytes of
/// log (0: none), stopped before the log at shutdown.
final class Checkpointer: Sendable {
    private struct Progress {
        var coveredLSN: UInt64
        var segment: Int?
    }

    let every: Int
    private let progress: Mutex<Progress>
    private let running = Mutex<Void>(())
    let listeners = Mutex<[@Sendable (Result<CheckpointReport, LedgerError>) -> Void]>([])
    private let stopping = Atomic<Bool>(false)
    private let done = DispatchSemaphore(value: 0)
    private let started = Atomic<Bool>(false)

    init(every: Int, coveredLSN: UInt64, segment: Int?) {
        self.every = every
        progress = Mutex(Progress(coveredLSN: coveredLSN, segment: segment))
    }

    var isEnabled: Bool { every > 0 }

    /// The log position the newest checkpoint covers.
    var coveredLSN: UInt64 { progress.withLock { $0.coveredLSN } }

    /// Runs `body` (a checkpoint returning what it covers) with no other running.
    func serially(_ body: () throws(LogFailure) -> (CheckpointReport, UInt64)) throws(LogFailure) -> CheckpointReport {
        try running.withLock { _ throws(LogFailure) -> CheckpointReport in
            let (report, lsn) = try body()
            progress.withLock { $0 = Progress(coveredLSN: lsn, segment: report.segment) }
            return report
        }
    }

    func start(_ ledger: LocalLedger) {
        guard every > 0, !started.exchange(true, ordering: .relaxed) else { return }
        let thread = Thread { [weak ledger] in
            BackgroundThread.configureCurrent(name: "raffled-ckpt")
            var pause = 0  // ticks to wait after a failed checkpoint
            while !self.stopping.load(ordering: .acquiring) {
                usleep(100_000)
                guard let ledger else { break }
                if pause > 0 {
                    pause -= 1
                    continue
                }
                let log = ledger.log
                guard !log.hasFailed, !log.isStalled, log.appendedLSN &- self.coveredLSN >= UInt64(self.every) else { continue }
                do throws(LogFailure) { try ledger.checkpoint() } catch {
                    // The log still holds everything: try again in 10 s (a new file, never the same sync).
                    pause = 100
                }
            }
            self.done.signal()
        }
        thread.start()
    }

    /// Stops the thread (after the checkpoint it may be writing).
    func stop() {
        guard started.load(ordering: .relaxed), !stopping.exchange(true, ordering: .acquiringAndReleasing) else { return }
        done.wait()
    }
}
