#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import RaffleCRC32C

/// The open segment file; touched only by the writer thread (and by start-up and stop, which run
/// when the writer does not).
struct WriterState: ~Copyable {
    // Non-copyable so the file descriptor has exactly one owner.
    let directory: String
    let files: any LogFileSystem
    private(set) var fd: Int32
    private(set) var segment: Int
    /// Bytes of records in the open segment (where the next record goes).
    private(set) var size: Int
    /// The file's length: `size` plus the zeros written ahead of it (see `zeroAhead`).
    private(set) var zeroedEnd: Int
    /// Where the pages not yet handed back to the kernel start (`dropSynced`; page-aligned).
    private var dropped = 0

    /// Small commits write into zeros written ahead of them, this much at a time (0: never; the
    /// default is `defaultZeroChunk`).
    ///
    /// Why: a commit that appends past the file's end makes `fdatasync` write metadata too (the new
    /// length, newly allocated blocks) — an extra device write and wait on every commit. Writing over
    /// zeros that an earlier sync already made durable changes nothing but data. Measured with
    /// `Bench/scripts/log-writes.py` (4 KiB commits: 114 → 77 µs of CPU, 327 → 212 µs of wall time
    /// each) and on the durable single-entry path (Bench/RESULTS.md, issue #15, "The log writer off
    /// the event loop's back, commits into zeros": the log write 114 → 26 µs, `fdatasync` 302 → 229
    /// µs on average). The zeros cost one extra write per `zeroChunk` of small commits. On a copy-on-write
    /// file system (btrfs, ZFS) an overwrite allocates anew, so there it only costs: turn it off.
    let zeroChunk: Int
    static let defaultZeroChunk = 1 << 20
    /// Commits larger than this append as before: bulk ingest writes MiBs per commit, where the
    /// metadata is noise and zeros written ahead would double the bytes the disk must take.
    static let zeroAheadLimit = 256 << 10

    init(directory: String, files: any LogFileSystem, segment: Int, fd: Int32, size: Int, zeroChunk: Int = WriterState.defaultZeroChunk) {
        self.directory = directory
        self.files = files
        self.segment = segment
        self.fd = fd
        self.size = size
        self.zeroChunk = max(zeroChunk, 0)
        zeroedEnd = size
    }

    static func path(_ directory: String, _ segment: Int) -> String {
        let n = String(segment)
        return directory + "/wal-" + String(repeating: "0", count: max(0, 8 - n.count)) + n + ".log"
    }

    /// Creates segment `segment` and fsyncs the directory so the new file's name is durable; if that
    /// cannot be done the file is removed again (a retry after a full disk creates it afresh).
    static func create(directory: String, segment: Int, files: any LogFileSystem) throws(LogFailure) -> Int32 {
        let path = path(directory, segment)
        let fd: Int32
        do throws(FileError) { fd = try files.create(path) } catch {
            throw LogFailure(message: "cannot create \(path): \(error)", outOfSpace: error.isOutOfSpace)
        }
        do throws(FileError) { try files.syncDirectory(directory) } catch {
            files.close(fd)
            files.remove(path)
            throw LogFailure(message: "fsync of directory \(directory) failed: \(error)")
        }
        return fd
    }

    /// Appends `batch` to the open segment, rolling to a new one first when it would pass
    /// `segmentBytes`. Out of space (`LogFailure.outOfSpace`): what was written of the batch is cut
    /// off again, so the segment ends at the last whole record and the batch can be written later.
    mutating func write(_ batch: ByteArray, segmentBytes: Int) throws(LogFailure) {
        try write(UnsafeRawBufferPointer(start: batch.base, count: batch.count), segmentBytes: segmentBytes)
    }

    /// Makes the open segment durable and starts the next one (its name made durable too). The old
    /// one stays open until the new one exists, so a full disk leaves this state intact.
    mutating func roll() throws(LogFailure) {
        // A finished segment holds its records and nothing after them: replay takes zeros at the end
        // only of the last segment for a torn tail.
        try cutZeros()
        try sync()
        let next = try Self.create(directory: directory, segment: segment + 1, files: files)
        files.dropCache(fd, from: dropped, to: size)
        files.close(fd)
        fd = next
        segment += 1
        size = 0
        zeroedEnd = 0
        dropped = 0
    }

    /// Cuts the zeros written ahead of the records off the open segment (not yet synced).
    private mutating func cutZeros() throws(LogFailure) {
        guard zeroedEnd > size else { return }
        do throws(FileError) { try files.truncate(fd, to: size) } catch {
            throw LogFailure(message: "cannot cut \(Self.path(directory, segment)) to its records (\(size) bytes): \(error)")
        }
        zeroedEnd = size
    }

    /// Writes zeros from `zeroedEnd` so that `needed` bytes of records after `size` land on them,
    /// plus `zeroChunk` more (never past `segmentBytes`). Best effort: if the zeros cannot all be
    /// written (a full disk), what was written of them stays (zeros at the end of the last segment
    /// are a torn tail to replay) and the records are appended as usual.
    private mutating func zeroAhead(_ needed: Int, segmentBytes: Int) {
        let target = max(size + needed, min(segmentBytes, (size + needed + zeroChunk + 4_095) & ~4_095))
        while zeroedEnd < target {
            let n = Self.zeros.withUnsafeBytes { zeros in
                try? files.write(fd, UnsafeRawBufferPointer(rebasing: zeros[0..<min(zeros.count, target - zeroedEnd)]), at: zeroedEnd)
            }
            guard let n, n > 0 else { return }
            zeroedEnd += n
        }
    }

    private static let zeros = [UInt8](repeating: 0, count: 256 << 10)

    /// After a sync: lets the kernel drop the synced pages of the open segment from the page cache
    /// (`LogFileSystem.dropCache`; the last, partly written page stays until it is full), once
    /// `dropEvery` bytes have gathered (a roll hands back the rest): one `posix_fadvise` per commit
    /// was ~0.8 % of the durable single-entry path's CPU at ~1,200 commits/s.
    mutating func dropSynced() {
        guard size - dropped >= Self.dropEvery else { return }
        files.dropCache(fd, from: dropped, to: size)
        dropped = size & ~4_095
    }

    static let dropEvery = 256 << 10

    /// Whole records only (`bytes` starts and ends at record boundaries); see `write(_:segmentBytes:)`.
    mutating func write(_ bytes: UnsafeRawBufferPointer, segmentBytes: Int) throws(LogFailure) {
        guard !bytes.isEmpty else { return }
        if size > 0 && size + bytes.count > segmentBytes { try roll() }
        if zeroChunk > 0 && bytes.count <= Self.zeroAheadLimit && size + bytes.count > zeroedEnd {
            zeroAhead(bytes.count, segmentBytes: segmentBytes)
        }
        var written = 0
        while written < bytes.count {
            do throws(FileError) {
                written += try files.write(fd, UnsafeRawBufferPointer(rebasing: bytes[written...]), at: size + written)
            } catch {
                let path = Self.path(directory, segment)
                guard error.isOutOfSpace else { throw LogFailure(message: "write to \(path) failed: \(error)") }
                // Cut back to the whole records (the zeros ahead go too): the batch is written later.
                do throws(FileError) { try files.truncate(fd, to: size) } catch {
                    throw LogFailure(message: "write to \(path) ran out of space and cutting off the partial write failed: \(error)")
                }
                zeroedEnd = size
                throw LogFailure(message: "no space left for the log at \(path): \(error)", outOfSpace: true)
            }
        }
        size += written
        zeroedEnd = max(zeroedEnd, size)
    }

    func sync() throws(LogFailure) {
        do throws(FileError) { try files.dataSync(fd) } catch {
            throw LogFailure(message: "fdatasync of \(Self.path(directory, segment)) failed: \(error)")
        }
    }

    mutating func close() {
        if fd >= 0 {
            try? cutZeros()  // a clean stop leaves the segment exactly its records
            try? files.dataSync(fd)
            files.close(fd)
            fd = -1
        }
    }
}

func errnoText() -> String { String(cString: strerror(errno)) + " (errno \(errno))" }

/// What start-up found in the log.
public struct ReplayReport: Sendable, Hashable {
    /// A torn tail cut off at start-up.
    public struct TruncatedTail: Sendable, Hashable {
        /// The segment file.
        public var file: String
        /// Where it was cut (the length of its valid prefix).
        public var offset: Int
        /// How many bytes were cut off.
        public var bytes: Int
    }
    /// Segments read.
    public var segments = 0
    /// Records applied.
    public var records = 0
    /// Bytes of valid log.
    public var bytes: UInt64 = 0
    /// Set when a torn tail was cut off.
    public var truncatedTail: TruncatedTail?
}

/// A corrupt record before the log's tail: start-up must stop.
public struct LogCorruption: Error, Sendable, CustomStringConvertible {
    /// The segment file.
    public var file: String
    /// Byte offset of the bad record in the file.
    public var offset: Int
    /// What is wrong.
    public var reason: String
    public var description: String {
        "log corrupt at \(file) offset \(offset): \(reason). Records after it cannot be trusted; refusing to start. "
            + "Restore the data directory from a backup, or move the damaged segment aside if you accept losing what it holds."
    }
}

extension WriteAheadLog {
    /// Opens the log in `directory` (created if missing): replays every record in order through
    /// `apply`, cuts off a torn tail (a last record that is incomplete, or zeros, at the end of the
    /// last segment), and returns a log ready to `start()` appending after the last valid record.
    ///
    /// With `start` (a checkpoint covers the records before that segment, which starts at that LSN)
    /// only the segments from `start.segment` on are replayed; earlier ones are left alone.
    ///
    /// `zeroFillBytes`: small commits are written over zeros written this far ahead of them (see
    /// `defaultZeroFillBytes`); 0: every commit appends.
    ///
    /// - Throws: `LogCorruption` naming the file and offset when a record before the tail is damaged,
    ///   or when a segment is missing from the sequence; `LogFailure` when the directory or files cannot
    ///   be used; any error `apply` throws.
    public static func open(
        directory: String, durability: Durability = .fsync, segmentBytes: Int = 64 << 20, commitInterval: Duration = .zero,
        zeroFillBytes: Int = WriteAheadLog.defaultZeroFillBytes, files: any LogFileSystem = POSIXFileSystem(), from start: (segment: Int, lsn: UInt64)? = nil, apply: (RecordKind, inout RecordReader) throws -> Void
    ) throws -> (WriteAheadLog, ReplayReport) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw LogFailure(message: "cannot create data directory \(directory): \(error.localizedDescription)")
        }
        let first = start?.segment ?? 1
        let names = try segmentNumbers(in: directory).filter { $0 >= first }
        for (index, segment) in names.enumerated() where segment != first + index {
            throw LogCorruption(
                file: WriterState.path(directory, first + index), offset: 0,
                reason: "segment missing (the log goes on at \(WriterState.path(directory, segment)))")
        }
        var report = ReplayReport()
        var lsn: UInt64 = start?.lsn ?? 0
        let startLSN = lsn
        var last: (segment: Int, size: Int)?
        for (index, segment) in names.enumerated() {
            let path = WriterState.path(directory, segment)
            let isLast = index == names.count - 1
            guard let data = MappedFile(path) else {
                throw LogFailure(message: "cannot read \(path): \(errnoText())")
            }
            let valid = try data.withUnsafeBytes { raw throws -> Int in
                try scan(raw, path: path, isLast: isLast) { kind, reader in
                    try apply(kind, &reader)
                    report.records += 1
                }
            }
            if valid < data.count {
                // Torn tail (scan throws for anything else): cut it off so appends follow valid data.
                guard truncate(path, off_t(valid)) == 0 else { throw LogFailure(message: "cannot truncate \(path): \(errnoText())") }
                report.truncatedTail = .init(file: path, offset: valid, bytes: data.count - valid)
            }
            lsn += UInt64(valid)
            report.segments += 1
            last = (segment, valid)
        }
        report.bytes = lsn - startLSN
        let state: WriterState
        if let last {
            let path = WriterState.path(directory, last.segment)
            let fd: Int32
            do throws(FileError) { fd = try files.openForAppending(path) } catch {
                throw LogFailure(message: "cannot open \(path) for appending: \(error)")
            }
            state = WriterState(directory: directory, files: files, segment: last.segment, fd: fd, size: last.size, zeroChunk: zeroFillBytes)
            if report.truncatedTail != nil { try state.sync() }
        } else {
            let fd = try WriterState.create(directory: directory, segment: first, files: files)
            state = WriterState(directory: directory, files: files, segment: first, fd: fd, size: 0, zeroChunk: zeroFillBytes)
        }
        let log = WriteAheadLog(
            directory: directory, durability: durability, segmentBytes: segmentBytes, commitInterval: commitInterval, writer: state, startLSN: lsn)
        return (log, report)
    }

    /// The segment numbers present in `directory`, ascending.
    public static func segmentNumbers(in directory: String) throws -> [Int] {
        let files: [String]
        do { files = try FileManager.default.contentsOfDirectory(atPath: directory) } catch {
            throw LogFailure(message: "cannot list \(directory): \(error.localizedDescription)")
        }
        return files.compactMap { name -> Int? in
            guard name.hasPrefix("wal-"), name.hasSuffix(".log") else { return nil }
            return Int(name.dropFirst(4).dropLast(4))
        }.sorted()
    }

    /// The file of segment `segment` in `directory`.
    public static func segmentPath(_ directory: String, _ segment: Int) -> String { WriterState.path(directory, segment) }

    /// Bytes the log's segment files hold on disk now (what has not been retired; nil if the
    /// directory cannot be listed).
    public var diskBytes: UInt64? {
        guard let segments = try? Self.segmentNumbers(in: directory) else { return nil }
        return segments.reduce(UInt64(0)) { total, segment in
            var info = stat()
            return stat(Self.segmentPath(directory, segment), &info) == 0 ? total + UInt64(max(info.st_size, 0)) : total
        }
    }

    /// `scan` for the replay fuzz target (this package only): one segment's bytes, no file.
    package static func scanSegment(
        _ raw: UnsafeRawBufferPointer, isLast: Bool, apply: (RecordKind, inout RecordReader) throws -> Void
    ) throws -> Int {
        try scan(raw, path: "(in memory)", isLast: isLast, apply: apply)
    }

    /// Walks the records of one segment; returns the length of its valid prefix. A damaged record
    /// is a torn tail (returned as the valid length) only in the last segment and only when nothing
    /// trustworthy could follow it: the record runs past the end of the file, everything from it to
    /// the end is zero, or its checksum fails and only zeros follow it. Anything else is corruption.
    static func scan(
        _ raw: UnsafeRawBufferPointer, path: String, isLast: Bool, apply: (RecordKind, inout RecordReader) throws -> Void
    ) throws -> Int {
        var offset = 0
        while offset < raw.count {
            let remaining = raw.count - offset
            func damaged(_ reason: String, runsPastEnd: Bool) throws -> Int {
                let allZero = raw[offset...].allSatisfy { $0 == 0 }
                if isLast && (runsPastEnd || allZero) { return offset }
                throw LogCorruption(file: path, offset: offset, reason: reason)
            }
            guard remaining >= 8 else { return try damaged("record header cut short", runsPastEnd: true) }
            let length = Int(UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
            let crc = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: offset + 4, as: UInt32.self))
            guard length >= 4 else { return try damaged("record length \(length) is too small", runsPastEnd: false) }
            guard length <= remaining - 8 else {
                return try damaged("record of \(length) bytes runs past the end of the file", runsPastEnd: true)
            }
            let body = UnsafeRawBufferPointer(rebasing: raw[(offset + 8)..<(offset + 8 + length)])
            guard CRC32C.extend(0, body) == crc else {
                // Torn too when only zeros follow it: the last commit, cut short as it overwrote the
                // zeros the writer had put ahead (see `WriterState.zeroChunk`).
                let end = offset + 8 + length
                return try damaged("record checksum mismatch", runsPastEnd: raw[end...].allSatisfy { $0 == 0 })
            }
            var reader = RecordReader(body: body)
            let kind = RecordKind(rawValue: reader.u8() ?? 0)
            _ = reader.skip(3)
            try apply(kind, &reader)
            offset += 8 + length
        }
        return offset
    }
}
