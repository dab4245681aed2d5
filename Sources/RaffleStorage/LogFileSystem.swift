#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An error from a file operation: its `errno`.
public struct FileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var code: Int32
    public init(_ code: Int32) { self.code = code }
    public var description: String { String(cString: strerror(code)) + " (errno \(code))" }
    /// No room on the file system (ENOSPC) or the quota is used up (EDQUOT): a failed *write* may be
    /// undone and tried again once space returns. (A failed sync never is: see `WriteAheadLog`.)
    public var isOutOfSpace: Bool { code == ENOSPC || code == EDQUOT }
}

/// The file operations the write-ahead log and checkpoints perform while serving: the seam through which tests
/// inject storage faults (EIO on sync, a full disk) and simulate power loss (dropping every write no
/// completed sync covers). Replay at start-up reads the files directly.
public protocol LogFileSystem: Sendable {
    /// Creates `path` for writing (it must not exist).
    func create(_ path: String) throws(FileError) -> Int32
    /// Opens an existing `path` for writing, positioned at its end (`write` appends).
    func openForAppending(_ path: String) throws(FileError) -> Int32
    /// Writes some of `bytes` (at least one) at the file's position and returns how many.
    func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(FileError) -> Int
    /// `pwrite`: writes some of `bytes` (at least one) at `offset`, over what is there or past the
    /// end, and returns how many. (The log writes its records this way, into zeros it wrote ahead.)
    func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws(FileError) -> Int
    /// `fdatasync`: what was written is durable once this returns.
    func dataSync(_ fd: Int32) throws(FileError)
    /// `fsync` of a directory: the names created in it are durable once this returns.
    func syncDirectory(_ path: String) throws(FileError)
    /// Cuts the file to `length` bytes (undoes a partial write).
    func truncate(_ fd: Int32, to length: Int) throws(FileError)
    /// Removes `path` (a segment whose creation could not be made durable, a retired segment, an
    /// old checkpoint). Durable once the directory is synced.
    func remove(_ path: String)
    /// Renames `from` to `to`, replacing it (a finished checkpoint). Durable once the directory is synced.
    func rename(_ from: String, _ to: String) throws(FileError)
    func close(_ fd: Int32)
    /// A hint after a sync: bytes `offset..<end` of `fd` are durable and will not be read while
    /// serving, so the kernel may drop them from the page cache. (Default: nothing.)
    func dropCache(_ fd: Int32, from offset: Int, to end: Int)
}

extension LogFileSystem {
    public func dropCache(_ fd: Int32, from offset: Int, to end: Int) {}
}

/// The real file system: the POSIX calls, retried on EINTR.
public struct POSIXFileSystem: LogFileSystem {
    public init() {}

    public func create(_ path: String) throws(FileError) -> Int32 {
        // Not O_APPEND: with it, Linux's pwrite ignores the offset and appends.
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileError(errno) }
        return fd
    }

    public func openForAppending(_ path: String) throws(FileError) -> Int32 {
        let fd = open(path, O_WRONLY | O_CLOEXEC)
        guard fd >= 0 else { throw FileError(errno) }
        guard lseek(fd, 0, SEEK_END) >= 0 else {
            let code = errno
            Glibc.close(fd)
            throw FileError(code)
        }
        return fd
    }

    public func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(FileError) -> Int {
        while true {
            let n = Glibc.write(fd, bytes.baseAddress, bytes.count)
            if n >= 0 { return n }
            if errno != EINTR { throw FileError(errno) }
        }
    }

    public func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws(FileError) -> Int {
        while true {
            let n = pwrite(fd, bytes.baseAddress, bytes.count, off_t(offset))
            if n >= 0 { return n }
            if errno != EINTR { throw FileError(errno) }
        }
    }

    public func dataSync(_ fd: Int32) throws(FileError) {
        guard fdatasync(fd) == 0 else { throw FileError(errno) }
    }

    public func syncDirectory(_ path: String) throws(FileError) {
        let dfd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard dfd >= 0 else { throw FileError(errno) }
        defer { Glibc.close(dfd) }
        guard fsync(dfd) == 0 else { throw FileError(errno) }
    }

    public func truncate(_ fd: Int32, to length: Int) throws(FileError) {
        guard ftruncate(fd, off_t(length)) == 0 else { throw FileError(errno) }
    }

    public func remove(_ path: String) { unlink(path) }

    public func rename(_ from: String, _ to: String) throws(FileError) {
        guard Glibc.rename(from, to) == 0 else { throw FileError(errno) }
    }

    public func close(_ fd: Int32) { Glibc.close(fd) }

    /// `posix_fadvise(POSIX_FADV_DONTNEED)` (on whole pages, clean ones only: call it after a sync).
    /// The log is written once and read back only at start-up; without this its pages pile up in the
    /// page cache and every write takes fresh ones. Measured on this project's VM (Bench/RESULTS.md,
    /// issue #15 item 3, point 7): a large saving in one phase (appending with a sync per MiB cost
    /// 0.9–2.2 ms of CPU per MiB, ~0.3 with each synced range dropped), no difference in another.
    public func dropCache(_ fd: Int32, from offset: Int, to end: Int) {
        guard end > offset else { return }
        _ = posix_fadvise(fd, off_t(offset), off_t(end - offset), Int32(POSIX_FADV_DONTNEED))
    }
}

/// A whole file mapped read-only (start-up reads segments and checkpoints this way: no copy into a
/// fresh buffer, whose pages the kernel would first have to zero). Only for files nothing else
/// shortens while it is mapped.
final class MappedFile {
    private let base: UnsafeMutableRawPointer?
    let count: Int

    /// Maps `path`; nil if it cannot be opened or mapped.
    init?(_ path: String) {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { Glibc.close(fd) }
        var info = stat()
        guard fstat(fd, &info) == 0 else { return nil }
        count = Int(info.st_size)
        guard count > 0 else {
            base = nil
            return
        }
        let mapped = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0)
        guard let mapped, mapped != MAP_FAILED else { return nil }
        madvise(mapped, count, MADV_SEQUENTIAL)
        base = mapped
    }

    deinit { if let base { munmap(base, count) } }

    func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: base, count: base == nil ? 0 : count))
    }
}
