#if canImport(Glibc)
import Glibc
#endif
public import RaffleStorage
import Synchronization

/// A test double of the log's file system (`LogFileSystem`): the real files underneath, with faults
/// injected on demand and power loss simulated.
///
/// - `failSyncs(with:)`: every `fdatasync` fails with that errno from now on (and `syncCalls` counts
///   every call, so a test can see the log never tries again).
/// - `space`: bytes the file system still has; a write past it is cut short and the next one fails
///   with ENOSPC (as a full disk does); `space = nil` is unlimited.
/// - `powerLoss()`: every write no completed `fdatasync` covers is dropped (each file is cut to what
///   was synced) and every file whose creation no directory sync covered disappears — what a machine
///   that lost power keeps, unlike kill -9, which keeps the page cache. Nothing works afterwards.
/// - `lyingSync`: `fdatasync` reports success without making anything durable (a log whose sync was
///   removed), so a test can show it would catch that.
public final class FaultyFileSystem: LogFileSystem {
    private struct OpenFile {
        var path: String
        var written: Int
        var synced: Int
    }

    private struct State {
        var files: [Int32: OpenFile] = [:]
        /// Paths created but not yet covered by a directory sync.
        var unsyncedNames: Set<String> = []
        var syncFailure: Int32?
        var syncCalls = 0
        var space: Int?
        var lyingSync = false
        var lost = false
    }

    private let state = Mutex(State())
    private let real = POSIXFileSystem()

    public init() {}

    /// Every `fdatasync` from now on fails with `code` (EIO, 5, by default).
    public func failSyncs(with code: Int32 = 5) { state.withLock { $0.syncFailure = code } }

    /// Calls to `fdatasync` so far.
    public var syncCalls: Int { state.withLock { $0.syncCalls } }

    /// Bytes left on the file system (nil: unlimited).
    public var space: Int? {
        get { state.withLock { $0.space } }
        set { state.withLock { $0.space = newValue } }
    }

    /// `fdatasync` succeeds without making anything durable.
    public var lyingSync: Bool {
        get { state.withLock { $0.lyingSync } }
        set { state.withLock { $0.lyingSync = newValue } }
    }

    /// Simulates power loss now (see the type's documentation).
    public func powerLoss() {
        state.withLock { s in
            s.lost = true
            for file in s.files.values { _ = Glibc.truncate(file.path, off_t(file.synced)) }
            for path in s.unsyncedNames { unlink(path) }
        }
    }

    private func check(_ s: State) throws(FileError) {
        if s.lost { throw FileError(EIO) }
    }

    public func create(_ path: String) throws(FileError) -> Int32 {
        try state.withLock { s throws(FileError) in
            try check(s)
            let fd = try real.create(path)
            s.files[fd] = OpenFile(path: path, written: 0, synced: 0)
            s.unsyncedNames.insert(path)
            return fd
        }
    }

    public func openForAppending(_ path: String) throws(FileError) -> Int32 {
        try state.withLock { s throws(FileError) in
            try check(s)
            let fd = try real.openForAppending(path)
            let size = Int(lseek(fd, 0, SEEK_END))
            s.files[fd] = OpenFile(path: path, written: size, synced: size)
            return fd
        }
    }

    public func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(FileError) -> Int {
        try state.withLock { s throws(FileError) in
            try check(s)
            var count = bytes.count
            if let space = s.space {
                guard space > 0 else { throw FileError(ENOSPC) }
                count = min(count, space)
            }
            let n = try real.write(fd, UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
            if s.space != nil { s.space! -= n }
            s.files[fd]?.written += n
            return n
        }
    }

    public func dataSync(_ fd: Int32) throws(FileError) {
        try state.withLock { s throws(FileError) in
            try check(s)
            s.syncCalls += 1
            if let code = s.syncFailure { throw FileError(code) }
            try real.dataSync(fd)
            if !s.lyingSync, let written = s.files[fd]?.written { s.files[fd]?.synced = written }
        }
    }

    public func syncDirectory(_ path: String) throws(FileError) {
        try state.withLock { s throws(FileError) in
            try check(s)
            if let code = s.syncFailure { throw FileError(code) }
            try real.syncDirectory(path)
            if !s.lyingSync { s.unsyncedNames = s.unsyncedNames.filter { !$0.hasPrefix(path + "/") } }
        }
    }

    public func truncate(_ fd: Int32, to length: Int) throws(FileError) {
        try state.withLock { s throws(FileError) in
            try check(s)
            try real.truncate(fd, to: length)
            if let old = s.files[fd] {
                if s.space != nil { s.space! += old.written - length }
                s.files[fd]?.written = length
                s.files[fd]?.synced = min(old.synced, length)
            }
        }
    }

    public func remove(_ path: String) {
        state.withLock { s in
            guard !s.lost else { return }
            real.remove(path)
            s.unsyncedNames.remove(path)
        }
    }

    public func close(_ fd: Int32) {
        state.withLock { s in
            // After power loss the descriptor stays open until the ledger closes it; nothing more reaches the disk.
            real.close(fd)
            s.files[fd] = nil
        }
    }
}
