import Foundation
import RaffleStorage
import RaffleTestSupport
import Testing


/// Opens a log in `dir` and returns it with the (kind, payload) records replayed.
func openLog(_ dir: String, segmentBytes: Int = 64 << 20, durability: Durability = .fsync) throws -> (WriteAheadLog, ReplayReport, [(UInt8, [UInt8])]) {
    var records: [(UInt8, [UInt8])] = []
    let (log, report) = try WriteAheadLog.open(directory: dir, durability: durability, segmentBytes: segmentBytes) { kind, reader in
        records.append((kind.rawValue, Array(reader.rest())))
    }
    return (log, report, records)
}

func payload(_ i: Int) -> [UInt8] { (0..<(8 + i % 40)).map { UInt8(truncatingIfNeeded: i &* 31 &+ $0) } }

@discardableResult
func appendAndWait(_ log: WriteAheadLog, _ bytes: [UInt8]) throws -> UInt64 {
    let lsn = try log.append(kind: .entries) { $0.bytes(bytes) }.get()
    while log.durableLSN < lsn && log.failure == nil { usleep(100) }
    return lsn
}

@Suite("Write-ahead log")
struct WriteAheadLogTests {
    @Test func recordsSurviveReopen() throws {
        let dir = TempDir()
        let (log, report, none) = try openLog(dir.path)
        #expect(none.isEmpty && report.records == 0)
        log.start()
        for i in 0..<100 { try appendAndWait(log, payload(i)) }
        #expect(log.stop() == nil)
        let (again, report2, records) = try openLog(dir.path)
        _ = again.stop()
        #expect(records.count == 100)
        #expect(report2.truncatedTail == nil)
        for (i, record) in records.enumerated() {
            #expect(record.0 == 1)
            #expect(record.1 == payload(i))
        }
    }

    /// The writer thread is named `raffled-wal` and runs under `SCHED_BATCH` (no wake-up preemption
    /// of the event loop; see `BackgroundThread`): read back from the kernel, /proc/self/task.
    @Test func theWriterThreadIsNamedAndRunsAsABatchThread() throws {
        #if os(Linux)
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path)
        log.start()
        try appendAndWait(log, payload(1))
        let tasks = try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")
        // (name, policy): comm, and field 41 of stat (after the parenthesised name, which may hold spaces).
        let threads: [(String, Int)] = tasks.compactMap { tid in
            guard let comm = try? String(contentsOfFile: "/proc/self/task/\(tid)/comm", encoding: .utf8),
                let stat = try? String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8),
                let close = stat.lastIndex(of: ")")
            else { return nil }
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            // After ")": field 3 (state) is fields[0], so field 41 (policy) is fields[38].
            guard fields.count > 38, let policy = Int(fields[38]) else { return nil }
            return (comm.trimmingCharacters(in: .whitespacesAndNewlines), policy)
        }
        let writers = threads.filter { $0.0 == "raffled-wal" }
        #expect(!writers.isEmpty, "no thread named raffled-wal among \(threads.map(\.0))")
        #expect(writers.allSatisfy { $0.1 == 3 }, "policies \(writers.map(\.1)) (3 is SCHED_BATCH)")
        #expect(log.stop() == nil)
        #endif
    }

    /// Small commits are written over zeros put ahead of them (`zeroFillBytes`, capped by the
    /// segment): while the log runs its newest segment is longer than its records, every earlier one
    /// ends exactly at its records (replay takes zeros only at the end of the last), and a clean stop
    /// cuts the zeros off. With `zeroFillBytes: 0` every commit appends.
    @Test(arguments: [WriteAheadLog.defaultZeroFillBytes, 0]) func smallCommitsGoIntoZerosWrittenAhead(zeroFill: Int) throws {
        let dir = TempDir()
        let segment = 4 << 10
        let (log, _) = try WriteAheadLog.open(directory: dir.path, segmentBytes: segment, zeroFillBytes: zeroFill) { _, _ in }
        log.start()
        for i in 0..<200 { try appendAndWait(log, payload(i)) }
        func segments() throws -> [(name: String, size: Int, records: Int)] {
            try dir.files().filter { $0.hasPrefix("wal-") }.sorted().map { name in
                let bytes = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/" + name))
                let records = try bytes.withUnsafeBytes { raw in try WriteAheadLog.scanSegment(raw, isLast: true) { _, _ in } }
                return (name, bytes.count, records)
            }
        }
        let running = try segments()
        #expect(running.count >= 2, "\(running.count) segments")
        for s in running.dropLast() {
            #expect(s.size == s.records, "\(s.name): \(s.size) bytes, records end at \(s.records)")
        }
        let newest = try #require(running.last)
        if zeroFill > 0 {
            #expect(newest.size == segment && newest.records < segment, "zeros ahead up to the segment's size: \(newest)")
        } else {
            #expect(newest.size == newest.records, "appends only: \(newest)")
        }
        #expect(log.stop() == nil)
        let stopped = try segments()
        #expect(stopped.allSatisfy { $0.size == $0.records }, "a clean stop leaves records only: \(stopped)")
        let (reopened, report, records) = try openLog(dir.path, segmentBytes: segment)
        _ = reopened.stop()
        #expect(report.truncatedTail == nil && records.count == 200)
        #expect(records.enumerated().allSatisfy { $0.element.1 == payload($0.offset) })
    }

    /// A commit torn as it overwrote the zeros ahead — a record whose checksum fails with only zeros
    /// after it — is a torn tail in the last segment; anywhere else, or with anything but zeros after
    /// it, it is corruption.
    @Test func aTornCommitOverZerosIsCutOnlyAtTheEndOfTheLog() throws {
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path)
        log.start()
        let valid = Int(try appendAndWait(log, payload(1)))
        let whole = Int(try appendAndWait(log, payload(2)))
        #expect(log.stop() == nil)
        let file = try Data(contentsOf: URL(fileURLWithPath: dir.path + "/" + (dir.files().first ?? "")))
        var torn = [UInt8](file)
        torn[whole - 3] ^= 0xFF  // the second record's body: its checksum fails
        func scan(_ bytes: [UInt8], isLast: Bool) throws -> Int {
            try bytes.withUnsafeBytes { raw in try WriteAheadLog.scanSegment(raw, isLast: isLast) { _, _ in } }
        }
        let zeros = [UInt8](repeating: 0, count: 5_000)
        #expect(try scan(torn + zeros, isLast: true) == valid, "cut before the torn record")
        #expect(throws: LogCorruption.self) { try scan(torn + zeros, isLast: false) }
        #expect(throws: LogCorruption.self) { try scan(torn + zeros + [1], isLast: true) }
        #expect(throws: LogCorruption.self) { try scan(torn + Array(file[..<valid]), isLast: true) }
        #expect(try scan(Array(file) + zeros, isLast: true) == whole, "zeros after whole records: cut")
    }

    @Test func groupCommitCoversConcurrentAppendsWithFewerSyncs() throws {
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path)
        log.start()
        let appends = 4 * 500
        // Four OS threads (not tasks: the cooperative pool may run tasks one after another), each
        // appending and waiting for durability, as four event loops would.
        let done = DispatchSemaphore(value: 0)
        for t in 0..<4 {
            Thread.detachNewThread {
                for i in 0..<500 { _ = try? appendAndWait(log, payload(t * 1000 + i)) }
                done.signal()
            }
        }
        for _ in 0..<4 { done.wait() }
        #expect(log.stop() == nil)
        #expect(log.durableLSN == log.appendedLSN)
        // Four writers each waiting for durability: syncs must be shared, not one per append.
        #expect(log.commitCount < UInt64(appends), "commits: \(log.commitCount)")
        let (_, _, records) = try openLog(dir.path)
        #expect(records.count == appends)
    }

    @Test func aCommitIntervalPacesCommitsAndLosesNothing() throws {
        let dir = TempDir()
        let interval = Duration.milliseconds(20)
        let (log, _) = try WriteAheadLog.open(directory: dir.path, commitInterval: interval) { _, _ in }
        #expect(log.commitInterval == interval)
        log.start()
        // A lone append after a quiet spell is committed without waiting for anything else.
        try appendAndWait(log, payload(0))
        // Then one append every half millisecond for ~200 ms, none waiting for durability: unpaced,
        // each commit would take what one fdatasync let gather; paced, at most one per 20 ms.
        let clock = ContinuousClock()
        let start = clock.now
        let before = log.commitCount
        var last: UInt64 = 0
        for i in 1...400 {
            last = try log.append(kind: .entries) { $0.bytes(payload(i)) }.get()
            usleep(500)
        }
        while log.durableLSN < last && log.failure == nil { usleep(100) }
        let elapsed = clock.now - start
        let commits = log.commitCount - before
        let most = UInt64(elapsed / interval) + 2
        #expect(commits >= 1 && commits <= most, "commits: \(commits) in \(elapsed), at most \(most) expected")
        #expect(log.stop() == nil)
        let (_, _, records) = try openLog(dir.path)
        #expect(records.map(\.1) == (0...400).map(payload))
    }

    @Test func syncedLogPagesAreHandedBackAndUnsyncedOnesNever() throws {
        let dir = TempDir()
        let files = FaultyFileSystem()
        let (log, _) = try WriteAheadLog.open(directory: dir.path, segmentBytes: 64 << 10, files: files) { _, _ in }
        log.start()
        // ~200 KiB of records over several 64 KiB segments, each waited for.
        for i in 0..<800 { try appendAndWait(log, [UInt8](repeating: UInt8(truncatingIfNeeded: i), count: 248)) }
        #expect(log.stop() == nil)
        // Handed back at every roll and every 256 KiB of a segment, not at every commit.
        #expect(files.dropCalls >= 3 && files.dropCalls < 100, "dropCache calls: \(files.dropCalls)")
        #expect(files.droppedUnsynced.isEmpty, "\(files.droppedUnsynced.count) unsynced drops, e.g. \(files.droppedUnsynced.prefix(3))")
        let (_, _, records) = try openLog(dir.path, segmentBytes: 64 << 10)
        #expect(records.count == 800)
    }

    @Test func segmentsRollAndReplayInOrder() throws {
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path, segmentBytes: 512)
        log.start()
        for i in 0..<200 { try appendAndWait(log, payload(i)) }
        log.stop()
        #expect(dir.files().count > 5, "\(dir.files())")
        let (log2, report, records) = try openLog(dir.path, segmentBytes: 512)
        #expect(report.segments == dir.files().count)
        #expect(records.map(\.1) == (0..<200).map(payload))
        // Appending continues in the last segment after a restart.
        log2.start()
        try appendAndWait(log2, [1, 2, 3, 4])
        log2.stop()
        let (_, _, after) = try openLog(dir.path, segmentBytes: 512)
        #expect(after.count == 201 && after.last?.1 == [1, 2, 3, 4])
    }

    @Test func tornTailIsCutAtEveryOffset() throws {
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path)
        log.start()
        var ends: [UInt64] = []
        for i in 0..<6 { ends.append(try appendAndWait(log, payload(i))) }
        log.stop()
        let file = dir.path + "/" + (dir.files().first ?? "")
        let full = try Data(contentsOf: URL(fileURLWithPath: file))
        let lastThreeStart = Int(ends[2])
        for cut in lastThreeStart...full.count {
            try full.prefix(cut).write(to: URL(fileURLWithPath: file))
            let (reopened, report, records) = try openLog(dir.path)
            reopened.stop()
            let whole = ends.filter { Int($0) <= cut }.count
            #expect(records.count == whole, "cut at \(cut)")
            let endOfWhole = whole == 0 ? 0 : Int(ends[whole - 1])
            if cut == endOfWhole {
                #expect(report.truncatedTail == nil)
            } else {
                #expect(report.truncatedTail?.offset == endOfWhole, "cut at \(cut)")
                #expect(report.truncatedTail?.bytes == cut - endOfWhole)
            }
            let size = (try FileManager.default.attributesOfItem(atPath: file)[.size] as? Int) ?? -1
            #expect(size == endOfWhole, "the torn tail is removed from the file")
        }
    }

    @Test func zeroFilledTailIsTorn() throws {
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path)
        log.start()
        try appendAndWait(log, payload(1))
        log.stop()
        let file = dir.path + "/" + (dir.files().first ?? "")
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
        try handle.seekToEnd()
        try handle.write(contentsOf: Data(count: 4096))
        try handle.close()
        let (l, report, records) = try openLog(dir.path)
        l.stop()
        #expect(records.count == 1)
        #expect(report.truncatedTail?.bytes == 4096)
    }

    @Test func corruptionBeforeTheTailStopsStartUpNamingFileAndOffset() throws {
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path)
        log.start()
        let first = try appendAndWait(log, payload(1))
        for i in 2..<5 { try appendAndWait(log, payload(i)) }
        log.stop()
        let name = dir.files().first ?? ""
        let url = URL(fileURLWithPath: dir.path + "/" + name)
        var bytes = try Data(contentsOf: url)
        bytes[Int(first) + 10] ^= 0xFF  // inside the second record's body
        try bytes.write(to: url)
        #expect {
            _ = try openLog(dir.path)
        } throws: { error in
            guard let corruption = error as? LogCorruption else { return false }
            return corruption.file.hasSuffix(name) && corruption.offset == Int(first)
                && corruption.description.contains("offset \(first)")
        }
    }

    @Test func aWriteErrorStopsAcknowledging() throws {
        let dir = TempDir()
        let (log, _, _) = try openLog(dir.path, segmentBytes: 64)
        // The next segment's name is taken by a file we cannot replace: rolling to it fails.
        FileManager.default.createFile(atPath: dir.path + "/wal-00000002.log", contents: nil)
        log.start()
        try appendAndWait(log, payload(60))  // fills segment 1
        let lsn = try log.append(kind: .entries) { $0.bytes(payload(61)) }.get()
        while log.failure == nil { usleep(100) }
        #expect(log.durableLSN < lsn, "the failed write is never reported durable")
        #expect(log.failure?.message.contains("wal-00000002.log") == true)
        #expect(throws: LogFailure.self) { try log.append(kind: .entries) { $0.bytes([1]) }.get() }
        log.stop()
    }
}
