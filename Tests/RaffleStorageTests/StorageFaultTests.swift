import Foundation
import RaffleCore
import RaffleLedger
import RaffleStorage
import RaffleTestSupport
import RaffleWire
import Synchronization
import Testing

/// Storage faults through the log's file-system seam (`FaultyFileSystem`), and once on a real
/// small file system: a failed sync, a full disk, power loss.
@Suite("Storage faults", .timeLimit(.minutes(1)))
struct StorageFaultTests {
    func makeRaffle(_ ledger: LocalLedger) throws -> UInt64 {
        let (info, point) = try ledger.createRaffle(RaffleSpec(title: "faults", opensAt: t0, closesAt: t0 + 3_600_000), now: t0).get()
        while !ledger.isDurable(point) && ledger.failureReason == nil { usleep(100) }
        return info.id
    }

    func entries(_ users: ClosedRange<UInt64>) -> [Entry] { users.map { Entry(userID: $0) } }

    /// Waits (bounded) until `done`.
    func eventually(_ seconds: Double = 5, _ done: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while !done() {
            if Date() > deadline { return false }
            usleep(1_000)
        }
        return true
    }

    @Test func aFailedSyncIsNeverRetriedNorAcknowledged() throws {
        let dir = TempDir()
        let files = FaultyFileSystem()
        let ledger = try LocalLedger(directory: dir.path, files: files)
        defer { ledger.shutdown() }
        let raffle = try makeRaffle(ledger)
        let (_, first) = try submit(ledger, raffle: raffle, entries(1...10), now: t0 + 1)
        waitDurable(ledger, first)
        files.failSyncs()
        let (_, second) = try submit(ledger, raffle: raffle, entries(11...20), now: t0 + 2)
        #expect(eventually { ledger.failureReason != nil })
        guard case .processed(_, let point) = second else { throw TestSupportError("not processed: \(second)") }
        let calls = files.syncCalls
        usleep(300_000)
        #expect(!ledger.isDurable(point), "the batch whose sync failed is never acknowledged")
        #expect(files.syncCalls == calls, "the failed fdatasync is not tried again")
        #expect(ledger.failureReason?.contains("fdatasync") == true && ledger.failureReason?.contains("errno 5") == true)
        let (_, third) = try submit(ledger, raffle: raffle, entries(21...21), now: t0 + 3)
        guard case .unavailable = third else { throw TestSupportError("after a failure: \(third)") }
    }

    /// With zeros written ahead of the log (4 KiB here), a disk that fills up still takes commits
    /// into them — they need no new space — and once they are used up the log stalls as it does
    /// without them: nothing of the stalled batch acknowledged, all of it written when room returns.
    @Test func zerosWrittenAheadTakeCommitsWhenTheDiskFillsThenTheLogStalls() throws {
        let dir = TempDir()
        let files = FaultyFileSystem()
        let ledger = try LocalLedger(directory: dir.path, logZeroFillBytes: 4_096, files: files)
        let raffle = try makeRaffle(ledger)
        files.space = 0
        let (_, first) = try submit(ledger, raffle: raffle, entries(1...20), now: t0 + 1)
        #expect(eventually { if case .processed(_, let p) = first { ledger.isDurable(p) } else { false } }, "into the zeros")
        var submitted: UInt64 = 20
        var stalled: Admission?
        while stalled == nil && submitted < 2_000 {
            let (_, next) = try submit(ledger, raffle: raffle, entries((submitted + 1)...(submitted + 20)), now: t0 + 2)
            submitted += 20
            guard case .processed(_, let point) = next else { throw TestSupportError("not processed: \(next)") }
            #expect(eventually { ledger.isDurable(point) || ledger.stallReason != nil })
            if !ledger.isDurable(point) { stalled = next }
        }
        guard case .processed(_, let point)? = stalled else { throw TestSupportError("never stalled after \(submitted) entries") }
        #expect(submitted > 100, "more than the first batches fit into 4 KiB of zeros: \(submitted)")
        #expect(ledger.stallReason?.contains("No space left") == true)
        usleep(200_000)
        #expect(!ledger.isDurable(point), "nothing of the stalled batch is acknowledged")
        files.space = nil
        #expect(eventually { ledger.isDurable(point) && ledger.stallReason == nil })
        ledger.shutdown()
        let reopened = try LocalLedger(directory: dir.path)
        defer { reopened.shutdown() }
        #expect(reopened.raffle(raffle, now: t0)?.entries == Int(submitted))
    }

    @Test func aFullDiskStallsWithoutLosingAnythingAndResumesWhenSpaceReturns() throws {
        let dir = TempDir()
        let files = FaultyFileSystem()
        // Every commit appends (no zeros written ahead, which a full disk would let the log use first:
        // see `zerosWrittenAheadTakeCommitsWhenTheDiskFillsThenTheLogStalls`).
        let ledger = try LocalLedger(directory: dir.path, logZeroFillBytes: 0, files: files)
        let stalls = Mutex<[String?]>([])
        ledger.onStall { reason in stalls.withLock { $0.append(reason) } }
        let raffle = try makeRaffle(ledger)
        files.space = 100  // the next record (260 bytes) is cut short, then ENOSPC
        let (_, pending) = try submit(ledger, raffle: raffle, entries(1...20), now: t0 + 1)
        #expect(eventually { ledger.stallReason != nil })
        #expect(ledger.stallReason?.contains("No space left") == true)
        guard case .processed(_, let point) = pending else { throw TestSupportError("not processed: \(pending)") }
        usleep(300_000)
        #expect(!ledger.isDurable(point), "nothing of the batch is acknowledged while the disk is full")
        #expect(ledger.failureReason == nil, "a full disk is not a failure")
        let (_, refused) = try submit(ledger, raffle: raffle, entries(21...30), now: t0 + 2)
        guard case .unavailable(let message) = refused else { throw TestSupportError("while stalled: \(refused)") }
        #expect(message.contains("disk is full"))
        files.space = nil
        #expect(eventually { ledger.isDurable(point) }, "written once space returns")
        #expect(ledger.stallReason == nil)
        #expect(stalls.withLock { $0.count == 2 && $0[0] != nil && $0[1] == nil }, "told once when it began, once when it ended")
        let (_, later) = try submit(ledger, raffle: raffle, entries(21...30), now: t0 + 3)
        waitDurable(ledger, later)
        ledger.shutdown()
        // The partial write was cut off: the log replays cleanly with every stored entry.
        let reopened = try LocalLedger(directory: dir.path)
        defer { reopened.shutdown() }
        #expect(reopened.replay.truncatedTail == nil, "no torn record was left behind")
        #expect(reopened.raffle(raffle, now: t0)?.entries == 30)
    }

    /// Writes batches from a thread until `stop`, then (at power loss) returns the users of every
    /// batch the ledger acknowledged.
    func acknowledgedAtPowerLoss(lyingSync: Bool, seed: UInt64) throws -> (dir: TempDir, raffle: UInt64?, acknowledged: [UInt64], admitted: Int) {
        let dir = TempDir()
        let files = FaultyFileSystem()
        files.lyingSync = lyingSync
        let ledger = try LocalLedger(directory: dir.path, segmentBytes: 4_096, files: files)
        let raffle = try makeRaffle(ledger)
        var rng = SeededGenerator(seed: seed)
        let batches = Int.random(in: 20...200, using: &rng)
        var admitted: [(CommitPoint, ClosedRange<UInt64>)] = []
        var next: UInt64 = 1
        for _ in 0..<batches {
            let n = UInt64.random(in: 1...30, using: &rng)
            let users = next...(next + n - 1)
            next += n
            let (_, admission) = try submit(ledger, raffle: raffle, entries(users), now: t0 + 1)
            if case .processed(_, let point) = admission { admitted.append((point, users)) }
            if Int.random(in: 0..<4, using: &rng) == 0 { usleep(UInt32.random(in: 0...300, using: &rng)) }
        }
        files.powerLoss()
        // Acknowledged: what the ledger reported durable by the time the power went.
        let acknowledged = admitted.filter { ledger.isDurable($0.0) }.flatMap { Array($0.1) }
        ledger.shutdown()
        return (dir, raffle, acknowledged, admitted.reduce(0) { $0 + $1.1.count })
    }

    /// Users of `acknowledged` missing after reopening `dir`.
    func lost(_ dir: TempDir, raffle: UInt64?, _ acknowledged: [UInt64]) throws -> Int {
        let reopened = try LocalLedger(directory: dir.path)
        defer { reopened.shutdown() }
        guard let raffle else { return acknowledged.count }
        return acknowledged.filter { reopened.hasEntry(userID: $0, raffle: raffle) != true }.count
    }

    @Test func powerLossKeepsEveryAcknowledgedEntry() throws {
        var total = 0
        var cutShort = 0
        for seed in 1...12 as ClosedRange<UInt64> {
            let run = try acknowledgedAtPowerLoss(lyingSync: false, seed: seed)
            total += run.acknowledged.count
            if run.acknowledged.count < run.admitted { cutShort += 1 }
            #expect(try lost(run.dir, raffle: run.raffle, run.acknowledged) == 0, "seed \(seed)")
        }
        #expect(total > 0, "the runs acknowledged entries before the power went")
        #expect(cutShort > 0, "in some runs the power went while entries were still waiting for their sync")
    }

    @Test func powerLossCatchesALogThatDoesNotSync() throws {
        // The same check against a log whose fdatasync does nothing: acknowledged entries vanish.
        var lostTotal = 0
        for seed in 1...3 as ClosedRange<UInt64> {
            let run = try acknowledgedAtPowerLoss(lyingSync: true, seed: seed)
            lostTotal += try lost(run.dir, raffle: run.raffle, run.acknowledged)
        }
        #expect(lostTotal > 0, "without a real sync, power loss loses acknowledged entries, and the test sees it")
    }

    @Test func aRealSmallFileSystemFillsUpAndRecovers() throws {
        // A 512 KiB tmpfs (root only; where mounting is not allowed the test says so and stops).
        let dir = TempDir()
        let mountPoint = dir.path + "/small"
        try FileManager.default.createDirectory(atPath: mountPoint, withIntermediateDirectories: true)
        let mounted = try runCommandBlocking("/bin/mount", ["-t", "tmpfs", "-o", "size=512k", "tmpfs", mountPoint])
        guard mounted.status == 0 else {
            print("StorageFaultTests: cannot mount a small tmpfs here (\(mounted.stderr)); the seam tests cover a full disk")
            return
        }
        defer { _ = try? runCommandBlocking("/bin/umount", ["-l", mountPoint]) }
        let filler = mountPoint + "/filler"
        FileManager.default.createFile(atPath: filler, contents: Data(count: 400 << 10))
        let ledger = try LocalLedger(directory: mountPoint + "/data", segmentBytes: 1 << 20)
        let raffle = try makeRaffle(ledger)
        var acknowledged: [UInt64] = []
        var pending: [(CommitPoint, ClosedRange<UInt64>)] = []
        var next: UInt64 = 1
        for _ in 0..<200 where ledger.stallReason == nil {
            let users = next...(next + 999)
            next += 1_000
            let (_, admission) = try submit(ledger, raffle: raffle, entries(users), now: t0 + 1)
            guard case .processed(_, let point) = admission else { break }
            while !ledger.isDurable(point) && ledger.stallReason == nil && ledger.failureReason == nil { usleep(100) }
            if ledger.isDurable(point) { acknowledged += users } else { pending.append((point, users)) }
        }
        #expect(ledger.stallReason != nil, "the small file system filled up")
        #expect(ledger.failureReason == nil)
        try FileManager.default.removeItem(atPath: filler)
        #expect(eventually { ledger.stallReason == nil }, "space returned: the log writes again")
        for (point, users) in pending {
            #expect(eventually { ledger.isDurable(point) })
            acknowledged += users
        }
        ledger.shutdown()
        let reopened = try LocalLedger(directory: mountPoint + "/data")
        defer { reopened.shutdown() }
        #expect(reopened.raffle(raffle, now: t0)?.entries == acknowledged.count, "every acknowledged entry, nothing torn")
    }
}
