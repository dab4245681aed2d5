#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
public import RaffleStorage

/// A consistent copy of a local ledger's data directory, taken while raffled serves from it.
///
/// Why a plain copy is consistent: a checkpoint file never changes once in place, a segment never
/// changes once the next one exists, and the newest segment's records only grow (over zeros the
/// writer put ahead of them, cut off before the next segment starts). So the copy takes the newest
/// checkpoint, then the segments from it on, in order: what it gets is the ledger as of some moment
/// (a record the writer was writing as the copy read it, and the zeros after it, are a torn tail, cut
/// off when the copy is opened). If a newer checkpoint retires a segment before it is copied, it starts over (at most
/// five times). The copy is synced, then opened as a ledger to check it and count what it holds.
public enum LocalBackup {
    /// What a backup copied and found.
    public struct Report: Sendable, Hashable {
        /// The checkpoint copied, if there was one.
        public var checkpoint: String?
        /// Segments copied.
        public var segments: Int
        /// Bytes copied.
        public var bytes: Int
        /// Raffles and entries in the copy, once opened.
        public var raffles: Int
        public var entries: Int
        /// A torn record at the copy's end (being written as it was read), cut off.
        public var cutTail: Bool
    }

    /// A backup that could not be made.
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// Copies `source` into `destination` (created; it must not hold files yet). `progress` is told
    /// each file as it is copied.
    public static func copy(from source: String, to destination: String, progress: (String, Int) -> Void = { _, _ in }) throws -> Report {
        guard let present = try? WriteAheadLog.segmentNumbers(in: source), !present.isEmpty else {
            throw Failure(description: "\(source) holds no raffled log (wal-*.log)")
        }
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: destination), !existing.isEmpty {
            throw Failure(description: "\(destination) is not empty: back up into a new directory")
        }
        do {
            try FileManager.default.createDirectory(atPath: destination, withIntermediateDirectories: true)
        } catch {
            throw Failure(description: "cannot create \(destination): \(error.localizedDescription)")
        }
        for attempt in 1...5 {
            var bytes = 0
            do {
                let checkpoint = Checkpoint.segments(in: source).first
                let segments = try WriteAheadLog.segmentNumbers(in: source).filter { $0 >= (checkpoint ?? 1) }
                var names = segments.map { URL(fileURLWithPath: WriteAheadLog.segmentPath(source, $0)).lastPathComponent }
                if let checkpoint { names.insert(URL(fileURLWithPath: Checkpoint.path(source, segment: checkpoint)).lastPathComponent, at: 0) }
                if FileManager.default.fileExists(atPath: source + "/admin.key") { names.append("admin.key") }
                for name in names {
                    let n = try copyFile(source + "/" + name, destination + "/" + name)
                    progress(name, n)
                    bytes += n
                }
                try syncDirectory(destination)
                let copy = try LocalLedger(directory: destination, checkpointBytes: 0, startLog: false)
                let stats = copy.stats()
                let cut = copy.replay.truncatedTail != nil
                copy.shutdown()
                return Report(
                    checkpoint: checkpoint.map { Checkpoint.path(destination, segment: $0) }, segments: segments.count, bytes: bytes,
                    raffles: stats.raffles, entries: stats.entries, cutTail: cut)
            } catch let error as Vanished where attempt < 5 {
                // A checkpoint retired a file as it was about to be copied: start over.
                _ = error
                for name in (try? FileManager.default.contentsOfDirectory(atPath: destination)) ?? [] {
                    try? FileManager.default.removeItem(atPath: destination + "/" + name)
                }
            }
        }
        throw Failure(description: "the data directory kept changing under the copy (checkpoints retiring segments); try again")
    }

    private struct Vanished: Error {}

    /// Copies one file (as it is now) and syncs the copy; returns its size.
    private static func copyFile(_ from: String, _ to: String) throws -> Int {
        let input = open(from, O_RDONLY | O_CLOEXEC)
        guard input >= 0 else {
            if errno == ENOENT { throw Vanished() }
            throw Failure(description: "cannot read \(from): \(errnoText())")
        }
        defer { close(input) }
        let output = open(to, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, from.hasSuffix("admin.key") ? 0o600 : 0o644)
        guard output >= 0 else { throw Failure(description: "cannot create \(to): \(errnoText())") }
        defer { close(output) }
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 16)
        defer { buffer.deallocate() }
        var total = 0
        while true {
            let n = read(input, buffer.baseAddress, buffer.count)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw Failure(description: "cannot read \(from): \(errnoText())") }
            if n == 0 { break }
            var done = 0
            while done < n {
                let w = write(output, buffer.baseAddress! + done, n - done)
                if w < 0 && errno == EINTR { continue }
                guard w > 0 else { throw Failure(description: "cannot write \(to): \(errnoText())") }
                done += w
            }
            total += n
        }
        guard fsync(output) == 0 else { throw Failure(description: "fsync of \(to) failed: \(errnoText())") }
        return total
    }

    private static func syncDirectory(_ path: String) throws {
        do throws(FileError) { try POSIXFileSystem().syncDirectory(path) } catch {
            throw Failure(description: "fsync of directory \(path) failed: \(error)")
        }
    }

    private static func errnoText() -> String { String(cString: strerror(errno)) + " (errno \(errno))" }
}
