#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Foundation
import RaffleCRC32C

/// Checkpoint files: a snapshot of the state the log's records before a segment build, so start-up
/// reads the snapshot and replays only the segments from that one on.
///
/// `checkpoint-NNNNNNNN.ckpt` covers every record before segment `NNNNNNNN` (the log started that
/// segment when the snapshot was taken: `WriteAheadLog.requestNewSegment`). On disk:
/// `["RAFCKPT1"][u64 segment][body][u64 body length][u32 CRC32C of all before]["END."]`,
/// little-endian. It is written as `….ckpt.tmp`, synced, renamed into place and the directory synced:
/// a crash at any point leaves either the previous checkpoint or this one, never half of one.
public enum Checkpoint {
    static let magic: [UInt8] = Array("RAFCKPT1".utf8)
    static let end: [UInt8] = Array("END.".utf8)

    /// The file holding the checkpoint before `segment`.
    public static func path(_ directory: String, segment: Int) -> String {
        let n = String(segment)
        return directory + "/checkpoint-" + String(repeating: "0", count: max(0, 8 - n.count)) + n + ".ckpt"
    }

    /// Checkpoints present in `directory`, newest (highest segment) first.
    public static func segments(in directory: String) -> [Int] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return names.compactMap { name -> Int? in
            guard name.hasPrefix("checkpoint-"), name.hasSuffix(".ckpt") else { return nil }
            return Int(name.dropFirst(11).dropLast(5))
        }.sorted(by: >)
    }

    /// Removes unfinished checkpoint files (`*.ckpt.tmp`) a crash left behind.
    public static func removeUnfinished(in directory: String, files: any LogFileSystem) {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        for name in names where name.hasPrefix("checkpoint-") && name.hasSuffix(".ckpt.tmp") {
            files.remove(directory + "/" + name)
        }
    }

    /// Removes checkpoints older than `segment` and makes that durable.
    public static func removeOlder(than segment: Int, in directory: String, files: any LogFileSystem) throws(LogFailure) {
        let old = segments(in: directory).filter { $0 < segment }
        guard !old.isEmpty else { return }
        for n in old { files.remove(path(directory, segment: n)) }
        do throws(FileError) { try files.syncDirectory(directory) } catch {
            throw LogFailure(message: "fsync of directory \(directory) failed: \(error)")
        }
    }

    /// Writes the checkpoint before `segment`: `body` streams its content into the writer. Returns the
    /// file's size. Durable (data and name) when it returns.
    @discardableResult
    public static func write(
        directory: String, segment: Int, files: any LogFileSystem, _ body: (inout CheckpointWriter) throws(LogFailure) -> Void
    ) throws(LogFailure) -> Int {
        let final = path(directory, segment: segment)
        let temporary = final + ".tmp"
        files.remove(temporary)
        let fd: Int32
        do throws(FileError) { fd = try files.create(temporary) } catch {
            throw LogFailure(message: "cannot create \(temporary): \(error)", outOfSpace: error.isOutOfSpace)
        }
        var writer = CheckpointWriter(fd: fd, files: files, path: temporary)
        do throws(LogFailure) {
            writer.raw(magic)
            writer.u64(UInt64(segment))
            let bodyStart = writer.count
            try body(&writer)
            writer.u64(UInt64(writer.count - bodyStart))
            writer.u32(writer.crc)  // CRC of everything before this field
            writer.raw(end)
            try writer.flush()
            do throws(FileError) { try files.dataSync(fd) } catch {
                throw LogFailure(message: "fdatasync of \(temporary) failed: \(error)")
            }
            writer.dropSynced()
        } catch {
            files.close(fd)
            files.remove(temporary)
            throw error
        }
        files.close(fd)
        do throws(FileError) {
            try files.rename(temporary, final)
            try files.syncDirectory(directory)
        } catch {
            throw LogFailure(message: "cannot put checkpoint \(final) in place: \(error)")
        }
        return writer.count
    }

    /// Reads and checks the checkpoint before `segment`; `body` gets its body (the bytes the writer's
    /// `body` wrote). Throws `CheckpointDamage` when the file is not a whole, intact checkpoint.
    public static func read<R>(directory: String, segment: Int, _ body: (UnsafeRawBufferPointer) throws -> R) throws -> R {
        let file = path(directory, segment: segment)
        guard let data = MappedFile(file) else {
            throw CheckpointDamage(file: file, reason: "cannot be read: \(errnoText())")
        }
        return try data.withUnsafeBytes { raw throws -> R in
            let header = magic.count + 8
            let trailer = 8 + 4 + end.count
            guard raw.count >= header + trailer else { throw CheckpointDamage(file: file, reason: "too short (\(raw.count) bytes)") }
            guard raw.prefix(magic.count).elementsEqual(magic) else { throw CheckpointDamage(file: file, reason: "not a checkpoint file") }
            guard raw.suffix(end.count).elementsEqual(end) else { throw CheckpointDamage(file: file, reason: "end marker missing (cut short?)") }
            let crcAt = raw.count - end.count - 4
            let stored = UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: crcAt, as: UInt32.self))
            guard CRC32C.extend(0, UnsafeRawBufferPointer(rebasing: raw[0..<crcAt])) == stored else {
                throw CheckpointDamage(file: file, reason: "checksum mismatch")
            }
            let named = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: magic.count, as: UInt64.self))
            guard named == UInt64(segment) else { throw CheckpointDamage(file: file, reason: "names segment \(named), not \(segment)") }
            let length = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: crcAt - 8, as: UInt64.self))
            guard length == UInt64(crcAt - 8 - header) else { throw CheckpointDamage(file: file, reason: "body length \(length) does not match the file") }
            return try body(UnsafeRawBufferPointer(rebasing: raw[header..<(crcAt - 8)]))
        }
    }
}

/// A checkpoint file that is missing, cut short or damaged.
public struct CheckpointDamage: Error, Sendable, CustomStringConvertible {
    /// The checkpoint file.
    public var file: String
    /// What is wrong.
    public var reason: String
    public init(file: String, reason: String) {
        self.file = file
        self.reason = reason
    }
    public var description: String { "checkpoint \(file) is damaged: \(reason)" }
}

/// Streams a checkpoint's content to its file through a 1 MiB buffer, keeping a running CRC32C.
///
/// Every `syncEvery` bytes it syncs what it wrote and lets the kernel drop those pages from the page
/// cache (`LogFileSystem.dropCache`): a checkpoint is read back only at start-up, so it need not
/// crowd the page cache. (Measured on this project's VM, Bench/RESULTS.md issue #15 item 3, point 7:
/// once it cut a 30M-entry bulk run's checkpoint thread from 46 % to 21 % of the server's CPU, when
/// writing into fresh page-cache pages was expensive there; later no difference either way.)
public struct CheckpointWriter: ~Copyable {
    /// Bytes written between intermediate syncs.
    public static let syncEvery = 8 << 20
    let fd: Int32
    let files: any LogFileSystem
    let path: String
    private let buffer: UnsafeMutableRawBufferPointer
    private var used = 0
    /// Bytes written so far (buffered or not).
    public private(set) var count = 0
    /// CRC32C of everything written so far.
    public private(set) var crc: UInt32 = 0
    private var failure: LogFailure?
    /// Bytes handed to the file so far, and where the pages not yet dropped start.
    private var written = 0
    private var dropped = 0

    init(fd: Int32, files: any LogFileSystem, path: String) {
        self.fd = fd
        self.files = files
        self.path = path
        buffer = .allocate(byteCount: 1 << 20, alignment: 16)
    }

    deinit { buffer.deallocate() }

    /// Appends raw bytes (large ones straight to the file).
    public mutating func raw(_ bytes: UnsafeRawBufferPointer) {
        crc = CRC32C.extend(crc, bytes)
        count += bytes.count
        if used + bytes.count > buffer.count { flushBuffer() }
        if bytes.count >= buffer.count {
            put(bytes)
        } else {
            UnsafeMutableRawBufferPointer(rebasing: buffer[used..<(used + bytes.count)]).copyMemory(from: bytes)
            used += bytes.count
        }
    }

    public mutating func raw(_ bytes: [UInt8]) { bytes.withUnsafeBytes { raw($0) } }
    public mutating func u8(_ v: UInt8) { withUnsafeBytes(of: v) { raw($0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { raw($0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { raw($0) } }
    public mutating func i64(_ v: Int64) { u64(UInt64(bitPattern: v)) }

    /// Writes what is buffered; throws the first write error met so far.
    public mutating func flush() throws(LogFailure) {
        flushBuffer()
        if let failure { throw failure }
    }

    private mutating func flushBuffer() {
        guard used > 0 else { return }
        put(UnsafeRawBufferPointer(rebasing: buffer[0..<used]))
        used = 0
    }

    private mutating func put(_ bytes: UnsafeRawBufferPointer) {
        guard failure == nil else { return }
        var done = 0
        while done < bytes.count {
            do throws(FileError) {
                done += try files.write(fd, UnsafeRawBufferPointer(rebasing: bytes[done...]))
            } catch {
                failure = LogFailure(message: "write to \(path) failed: \(error)", outOfSpace: error.isOutOfSpace)
                return
            }
        }
        written += bytes.count
        if written - dropped >= Self.syncEvery {
            do throws(FileError) { try files.dataSync(fd) } catch {
                failure = LogFailure(message: "fdatasync of \(path) failed: \(error)")
                return
            }
            dropSynced()
        }
    }

    /// Lets the kernel drop the pages written so far (call after a sync; the partial last page stays).
    mutating func dropSynced() {
        files.dropCache(fd, from: dropped, to: written)
        dropped = written & ~4_095
    }
}
