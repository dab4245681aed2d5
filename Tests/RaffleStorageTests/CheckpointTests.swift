import Foundation
import RaffleCore
import RaffleLedger
import RaffleStorage
import RaffleTestSupport
import RaffleWire
import Synchronization
import Testing

/// Checkpoints: restart reads a snapshot and replays only the log after it (issue #18, bounded
/// restart); a crash at any write boundary of a checkpoint recovers exactly the acknowledged entries.
@Suite("Checkpoints", .timeLimit(.minutes(2)))
struct CheckpointTests {
    func raffle(_ ledger: LocalLedger, _ title: String = "ckpt") throws -> UInt64 {
        let (info, point) = try ledger.createRaffle(
            RaffleSpec(title: title, opensAt: t0, closesAt: t0 + 3_600_000, winners: 2, maxTicketsPerUser: 5), now: t0
        ).get()
        while !ledger.isDurable(point) && ledger.failureReason == nil { usleep(100) }
        return info.id
    }

    /// Submits `users` (tickets vary) and waits until they are durable: all acknowledged.
    func enter(_ ledger: LocalLedger, _ raffle: UInt64, _ users: ClosedRange<UInt64>) throws {
        var next = users.lowerBound
        while next <= users.upperBound {
            let last = min(next + 499, users.upperBound)
            let (outcomes, admission) = try submit(ledger, raffle: raffle, (next...last).map { Entry(userID: $0, tickets: UInt32($0 % 5 + 1)) }, now: t0 + 1)
            #expect(outcomes.allSatisfy { $0 == .accepted || $0 == .alreadyEntered })
            waitDurable(ledger, admission)
            next = last + 1
        }
    }

    /// Everything a client can see of a ledger: raffles (with draws) and every entry list.
    func contents(_ ledger: LocalLedger) -> ([RaffleInfo], [[Draw.Entry]]) {
        let raffles = ledger.raffles(now: t0 + 2)
        return (raffles, raffles.map { ledger.entries(of: $0.id) ?? [] })
    }

    func listing(_ dir: TempDir) -> [String] {
        ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    }

    @Test func restartReadsTheCheckpointAndReplaysOnlyTheLogAfterIt() throws {
        let dir = TempDir()
        let before: ([RaffleInfo], [[Draw.Entry]])
        do {
            let ledger = try LocalLedger(directory: dir.path, segmentBytes: 16 << 10, checkpointBytes: 0)
            let a = try raffle(ledger, "a")
            let b = try raffle(ledger, "b")
            try enter(ledger, a, 1...3_000)
            try enter(ledger, b, 500...900)
            _ = try ledger.closeRaffle(b, now: t0 + 2).get()
            let segmentsBefore = listing(dir).filter { $0.hasPrefix("wal-") }.count
            let report = try ledger.checkpoint()
            #expect(report.entries == 3_401 && report.raffles == 2)
            #expect(report.retiredSegments == segmentsBefore, "every segment before the checkpoint is retired")
            try enter(ledger, a, 2_900...3_200)  // after the checkpoint: replayed from the log
            let c = try raffle(ledger, "c")
            try enter(ledger, c, 1...10)
            before = contents(ledger)
            ledger.shutdown()  // checkpointBytes 0: no checkpoint at shutdown
        }
        #expect(listing(dir).filter { $0.hasPrefix("checkpoint-") }.count == 1)
        let reopened = try LocalLedger(directory: dir.path, checkpointBytes: 0)
        defer { reopened.shutdown() }
        #expect(reopened.recovery.checkpoint != nil && reopened.recovery.checkpointEntries == 3_401)
        #expect(reopened.replay.records == 3, "only the batch, the raffle and its batch after the checkpoint")
        let after = contents(reopened)
        #expect(after.0 == before.0, "raffles, counts, seeds and the published draw survive")
        #expect(after.1 == before.1, "every entry, with its tickets")
        #expect(try raffle(reopened, "d") == 4, "raffle ids go on")
        #expect(reopened.hasEntry(userID: 3_200, raffle: 1) == true && reopened.hasEntry(userID: 3_201, raffle: 1) == false)
    }

    @Test func theBackgroundThreadCheckpointsEveryFewBytesAndRetiresOldFiles() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path, segmentBytes: 8 << 10, checkpointBytes: 32 << 10)
        let reports = Mutex<[CheckpointReport]>([])
        ledger.onCheckpoint { if case .success(let r) = $0 { reports.withLock { $0.append(r) } } }
        let a = try raffle(ledger)
        for round in 0..<4 as Range<UInt64> {
            try enter(ledger, a, (round * 3_000 + 1)...(round * 3_000 + 3_000))
            let deadline = Date().addingTimeInterval(10)
            while reports.withLock({ $0.count }) <= round && Date() < deadline { usleep(10_000) }
        }
        let written = reports.withLock { $0 }
        #expect(written.count >= 4, "a checkpoint after each ~36 KiB of log")
        #expect(written.map(\.segment) == written.map(\.segment).sorted() && Set(written.map(\.segment)).count == written.count)
        // Only the newest checkpoint and the segments from it on are left.
        let left = listing(dir)
        #expect(left.filter { $0.hasPrefix("checkpoint-") } == [URL(fileURLWithPath: written.last!.file).lastPathComponent])
        let oldest = left.filter { $0.hasPrefix("wal-") }.compactMap { Int($0.dropFirst(4).dropLast(4)) }.min()
        #expect(oldest == written.last!.segment)
        let before = contents(ledger)
        ledger.shutdown()
        let reopened = try LocalLedger(directory: dir.path)
        defer { reopened.shutdown() }
        #expect(contents(reopened) == before && before.1.first?.count == 12_000)
    }

    /// A crash (power loss) at each disk-changing step of writing a checkpoint — the log's new
    /// segment, the file's writes, its sync, the rename, the directory syncs, the removals — leaves a
    /// data directory that recovers exactly the acknowledged entries, and goes on working.
    @Test func aCrashAtEveryWriteBoundaryOfACheckpointRecoversExactlyWhatWasAcknowledged() throws {
        var crashes = 0
        for step in 0..<200 {
            let dir = TempDir()
            let files = FaultyFileSystem()
            let acknowledged: ([RaffleInfo], [[Draw.Entry]])
            do {
                let ledger = try LocalLedger(directory: dir.path, segmentBytes: 8 << 10, checkpointBytes: 0, files: files)
                let a = try raffle(ledger, "a")
                try enter(ledger, a, 1...1_000)
                if step % 2 == 1 { try ledger.checkpoint() }  // odd steps: an older checkpoint to replace
                let b = try raffle(ledger, "b")
                try enter(ledger, b, 1...700)
                try enter(ledger, a, 900...1_500)
                acknowledged = contents(ledger)
                files.crash(afterOperations: step / 2)
                _ = try? ledger.checkpoint()
                ledger.shutdown()
            }
            guard files.powerWasLost else {
                #expect(step > 10, "a checkpoint takes a dozen disk operations or more")
                break
            }
            crashes += 1
            let reopened = try LocalLedger(directory: dir.path, checkpointBytes: 0)
            #expect(contents(reopened) == acknowledged, "crash at step \(step / 2) (older checkpoint: \(step % 2 == 1))")
            #expect(!listing(dir).contains { $0.hasSuffix(".tmp") || $0.contains(".kept-") }, "no leftovers")
            // It goes on: a new entry, a checkpoint, a restart.
            try enter(reopened, 1, 5_000...5_000)
            try reopened.checkpoint()
            reopened.shutdown()
            let again = try LocalLedger(directory: dir.path, checkpointBytes: 0)
            #expect(again.hasEntry(userID: 5_000, raffle: 1) == true && again.raffle(1, now: t0 + 2)?.entries == 1_501)
            again.shutdown()
        }
        print("checkpoint crash points: \(crashes)")
        #expect(crashes > 20)
    }

    @Test func aDamagedCheckpointFallsBackToAnOlderOneWhoseLogIsStillThere() throws {
        let dir = TempDir()
        let keep = TempDir()
        let before: ([RaffleInfo], [[Draw.Entry]])
        do {
            let ledger = try LocalLedger(directory: dir.path, segmentBytes: 8 << 10, checkpointBytes: 0)
            let a = try raffle(ledger)
            try enter(ledger, a, 1...800)
            let first = try ledger.checkpoint()
            try enter(ledger, a, 801...1_600)
            // Keep the first checkpoint and the log after it, as an operator's copy of the stopped
            // server would. (Not of a running one: its newest segment may end in the zeros written
            // ahead of its commits, which replay takes only at the end of the log, so such a segment
            // cannot go back in front of later ones. `raffled backup` makes live copies.)
            ledger.shutdown()
            for name in listing(dir) where name.hasPrefix("wal-") || name == URL(fileURLWithPath: first.file).lastPathComponent {
                try FileManager.default.copyItem(atPath: dir.path + "/" + name, toPath: keep.path + "/" + name)
            }
            let restarted = try LocalLedger(directory: dir.path, segmentBytes: 8 << 10, checkpointBytes: 0)
            let second = try restarted.checkpoint()
            try enter(restarted, a, 1_601...1_700)
            before = contents(restarted)
            restarted.shutdown()
            for name in listing(keep) where !FileManager.default.fileExists(atPath: dir.path + "/" + name) {
                try FileManager.default.copyItem(atPath: keep.path + "/" + name, toPath: dir.path + "/" + name)
            }
            // Flip one byte in the middle of the newest checkpoint.
            let handle = try #require(FileHandle(forUpdatingAtPath: second.file))
            let size = try handle.seekToEnd()
            try handle.seek(toOffset: size / 2)
            let byte = try #require(try handle.read(upToCount: 1)).first ?? 0
            try handle.seek(toOffset: size / 2)
            try handle.write(contentsOf: [byte ^ 0xFF])
            try handle.close()
        }
        let reopened = try LocalLedger(directory: dir.path, checkpointBytes: 0)
        #expect(reopened.recovery.damaged.count == 1 && reopened.recovery.damaged[0].contains("checksum mismatch"))
        #expect(reopened.recovery.checkpointEntries == 800, "the older checkpoint was read")
        #expect(contents(reopened) == before)
        reopened.shutdown()
    }

    @Test func aDamagedCheckpointWithItsLogRetiredStopsStartUpWithAClearMessage() throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path, segmentBytes: 8 << 10, checkpointBytes: 0)
        let a = try raffle(ledger)
        try enter(ledger, a, 1...2_000)
        let report = try ledger.checkpoint()
        ledger.shutdown()
        // Cut it short, as a crash of the disk itself might.
        let data = try #require(FileManager.default.contents(atPath: report.file))
        try data.prefix(data.count / 3).write(to: URL(fileURLWithPath: report.file))
        // A leftover unfinished checkpoint is removed, not read.
        try Data([1, 2, 3]).write(to: URL(fileURLWithPath: dir.path + "/checkpoint-00000099.ckpt.tmp"))
        #expect {
            _ = try LocalLedger(directory: dir.path, checkpointBytes: 0)
        } throws: { error in
            let text = "\(error)"
            return text.contains(report.file) && text.contains("end marker missing") && text.contains("backup")
        }
        #expect(!FileManager.default.fileExists(atPath: dir.path + "/checkpoint-00000099.ckpt.tmp"))
    }

    @Test func aLargeCheckpointIsSyncedInPartsAndHandsItsPagesBack() throws {
        let dir = TempDir()
        let files = FaultyFileSystem()
        let ledger = try LocalLedger(directory: dir.path, checkpointBytes: 0, files: files)
        let a = try raffle(ledger)
        // 12 bytes per entry: 800,000 entries make a checkpoint of ~9.6 MB, over `syncEvery`.
        var next: UInt64 = 1
        while next <= 800_000 {
            let (_, admission) = try submit(ledger, raffle: a, (next..<(next + 4_000)).map { Entry(userID: $0, tickets: 1) }, now: t0 + 1)
            waitDurable(ledger, admission)
            next += 4_000
        }
        let (syncs, drops) = (files.syncCalls, files.dropCalls)
        let report = try ledger.checkpoint()
        #expect(report.bytes > CheckpointWriter.syncEvery)
        // The roll of the log, one sync per `syncEvery` bytes of checkpoint, and the last one.
        #expect(files.syncCalls - syncs >= 2 + report.bytes / CheckpointWriter.syncEvery, "syncs: \(files.syncCalls - syncs)")
        #expect(files.dropCalls - drops >= 1 + report.bytes / CheckpointWriter.syncEvery, "drops: \(files.dropCalls - drops)")
        #expect(files.droppedUnsynced.isEmpty, "\(files.droppedUnsynced.count) unsynced drops, e.g. \(files.droppedUnsynced.prefix(3))")
        let before = contents(ledger)
        ledger.shutdown()
        let reopened = try LocalLedger(directory: dir.path, checkpointBytes: 0)
        defer { reopened.shutdown() }
        #expect(reopened.recovery.checkpoint != nil)
        #expect(contents(reopened) == before)
    }

    @Test func aCheckpointThatCannotBeWrittenLosesNothing() throws {
        let dir = TempDir()
        let files = FaultyFileSystem()
        // No zeros written ahead of the log: cutting them off at the roll would give room back.
        let ledger = try LocalLedger(directory: dir.path, checkpointBytes: 0, logZeroFillBytes: 0, files: files)
        let a = try raffle(ledger)
        try enter(ledger, a, 1...1_000)
        files.space = 2_000  // the log's roll fits, the checkpoint does not
        #expect(throws: LogFailure.self) { try ledger.checkpoint() }
        #expect(!self.listing(dir).contains { $0.hasPrefix("checkpoint-") }, "the unfinished file is removed")
        files.space = nil
        try enter(ledger, a, 1_001...1_100)
        let before = contents(ledger)
        ledger.shutdown()
        let reopened = try LocalLedger(directory: dir.path, checkpointBytes: 0)
        defer { reopened.shutdown() }
        #expect(contents(reopened) == before && reopened.recovery.checkpoint == nil)
    }
}
