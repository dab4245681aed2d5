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
/// - `crash(afterOperations:)`: the n+1-th operation that changes the disk (create, write, sync,
///   truncate, rename, remove) finds the power gone: it fails and `powerLoss()` happens — a crash at
///   every write boundary, one n at a time.
///
/// Names: a rename or removal no directory sync covered is undone at power loss (the old name comes
/// back), as a created file no directory sync covered disappears.
public final class FaultyFileSystem: LogFileSystem {
    private struct FileLengths {
        var written: Int
        var synced: Int
        /// Synced bytes overwritten since the last sync, with what they held (oldest first): put
        /// back at power loss, as a disk that never got the new data still has the old.
        var overwritten: [(offset: Int, old: [UInt8])] = []
    }

    /// A change of names not yet made durable, undone at power loss (latest first).
    private enum NameChange {
        case renamed(from: String, to: String, replaced: String?)
        case removed(path: String, keptAt: String)
    }

    private struct State {
        var open: [Int32: String] = [:]
        /// Every file written through this layer, by path: what was written and what is durable.
        var lengths: [String: FileLengths] = [:]
        /// Paths created but not yet covered by a directory sync.
        var unsyncedNames: Set<String> = []
        var nameChanges: [NameChange] = []
        var operationsLeft: Int?
        var kept = 0
        var syncFailure: Int32?
        var syncCalls = 0
        var space: Int?
        var lyingSync = false
        var lost = false
        var dropCalls = 0
        var droppedUnsynced: [String] = []
    }

    private let state = Mutex(State())
    private let real = POSIXFileSystem()

    public init() {}

    /// Every `fdatasync` from now on fails with `code` (EIO, 5, by default).
    public func failSyncs(with code: Int32 = 5) { state.withLock { $0.syncFailure = code } }

    /// How often the page-cache hint (`dropCache`) was given.
    public var dropCalls: Int { state.withLock { $0.dropCalls } }
    /// Each `dropCache` that named bytes no completed sync covered (must stay empty: dirty pages
    /// are not the log's to give up).
    public var droppedUnsynced: [String] { state.withLock { $0.droppedUnsynced } }

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
    public func powerLoss() { state.withLock { Self.losePower(&$0) } }

    /// The `n`+1-th disk-changing operation from now fails and loses power (nil: never).
    public func crash(afterOperations n: Int?) { state.withLock { $0.operationsLeft = n } }

    /// Whether power was lost (by `powerLoss()` or a crash point).
    public var powerWasLost: Bool { state.withLock { $0.lost } }

    private static func losePower(_ s: inout State) {
        guard !s.lost else { return }
        s.lost = true
        for (path, file) in s.lengths {
            if !file.overwritten.isEmpty {
                let fd = open(path, O_WRONLY | O_CLOEXEC)
                if fd >= 0 {
                    for change in file.overwritten.reversed() {
                        _ = change.old.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(change.offset)) }
                    }
                    Glibc.close(fd)
                }
            }
            if file.synced < file.written { _ = Glibc.truncate(path, off_t(file.synced)) }
        }
        for change in s.nameChanges.reversed() {
            switch change {
            case .renamed(let from, let to, let replaced):
                Glibc.rename(to, from)
                if let replaced { Glibc.rename(replaced, to) }
            case .removed(let path, let keptAt):
                Glibc.rename(keptAt, path)
            }
        }
        for path in s.unsyncedNames { unlink(path) }
    }

    /// Fails once power is lost; counts down to a crash point.
    private func check(_ s: inout State) throws(FileError) {
        if let left = s.operationsLeft {
            if left == 0 { Self.losePower(&s) } else { s.operationsLeft = left - 1 }
        }
        if s.lost { throw FileError(EIO) }
    }

    /// Makes the pending name changes in `directory` durable: removed files go for good.
    private static func settleNames(_ s: inout State, in directory: String) {
        s.unsyncedNames = s.unsyncedNames.filter { !$0.hasPrefix(directory + "/") }
        s.nameChanges = s.nameChanges.filter { change in
            switch change {
            case .renamed(_, let to, let replaced):
                guard to.hasPrefix(directory + "/") else { return true }
                if let replaced { unlink(replaced) }
                return false
            case .removed(let path, let keptAt):
                guard path.hasPrefix(directory + "/") else { return true }
                unlink(keptAt)
                return false
            }
        }
    }

    private func keep(_ path: String, _ s: inout State) -> String {
        s.kept += 1
        return path + ".kept-until-directory-sync-\(s.kept)"
    }

    public func create(_ path: String) throws(FileError) -> Int32 {
        try state.withLock { s throws(FileError) in
            try check(&s)
            let fd = try real.create(path)
            s.open[fd] = path
            s.lengths[path] = FileLengths(written: 0, synced: 0)
            s.unsyncedNames.insert(path)
            return fd
        }
    }

    public func openForAppending(_ path: String) throws(FileError) -> Int32 {
        try state.withLock { s throws(FileError) in
            if s.lost { throw FileError(EIO) }
            let fd = try real.openForAppending(path)
            let size = Int(lseek(fd, 0, SEEK_END))
            s.open[fd] = path
            if s.lengths[path] == nil { s.lengths[path] = FileLengths(written: size, synced: size) }
            return fd
        }
    }

    public func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer) throws(FileError) -> Int {
        try state.withLock { s throws(FileError) in
            try check(&s)
            var count = bytes.count
            if let space = s.space {
                guard space > 0 else { throw FileError(ENOSPC) }
                count = min(count, space)
            }
            let n = try real.write(fd, UnsafeRawBufferPointer(rebasing: bytes[0..<count]))
            if s.space != nil { s.space! -= n }
            if let path = s.open[fd] { s.lengths[path]?.written += n }
            return n
        }
    }

    /// Positional writes: past the synced length they are lost at power loss like appends; over
    /// synced bytes, the old bytes come back.
    public func write(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, at offset: Int) throws(FileError) -> Int {
        try state.withLock { s throws(FileError) in
            try check(&s)
            let path = s.open[fd]
            let file = path.flatMap { s.lengths[$0] }
            var count = bytes.count
            if let space = s.space {
                // Only growth takes space.
                let grows = max(0, offset + count - (file?.written ?? 0))
                guard grows == 0 || space > 0 else { throw FileError(ENOSPC) }
                count = min(count, count - grows + space)
            }
            var saved: [UInt8] = []
            if let file, offset < file.synced {
                // Keep what the synced part held, read back from the real file before it changes.
                saved = [UInt8](repeating: 0, count: min(count, file.synced - offset))
                let readFD = open(path!, O_RDONLY | O_CLOEXEC)
                if readFD >= 0 {
                    _ = saved.withUnsafeMutableBytes { pread(readFD, $0.baseAddress, $0.count, off_t(offset)) }
                    Glibc.close(readFD)
                }
            }
            let n = try real.write(fd, UnsafeRawBufferPointer(rebasing: bytes[0..<count]), at: offset)
            if let path, var file {
                if !saved.isEmpty { file.overwritten.append((offset, Array(saved.prefix(n)))) }
                let grew = max(0, offset + n - file.written)
                if s.space != nil { s.space! -= grew }
                file.written = max(file.written, offset + n)
                s.lengths[path] = file
            }
            return n
        }
    }

    public func dataSync(_ fd: Int32) throws(FileError) {
        try state.withLock { s throws(FileError) in
            try check(&s)
            s.syncCalls += 1
            if let code = s.syncFailure { throw FileError(code) }
            try real.dataSync(fd)
            if !s.lyingSync, let path = s.open[fd], let written = s.lengths[path]?.written {
                s.lengths[path]?.synced = written
                s.lengths[path]?.overwritten = []
            }
        }
    }

    public func syncDirectory(_ path: String) throws(FileError) {
        try state.withLock { s throws(FileError) in
            try check(&s)
            if let code = s.syncFailure { throw FileError(code) }
            try real.syncDirectory(path)
            if !s.lyingSync { Self.settleNames(&s, in: path) }
        }
    }

    public func truncate(_ fd: Int32, to length: Int) throws(FileError) {
        try state.withLock { s throws(FileError) in
            try check(&s)
            try real.truncate(fd, to: length)
            if let path = s.open[fd], let old = s.lengths[path] {
                if s.space != nil { s.space! += old.written - length }
                s.lengths[path] = FileLengths(
                    written: length, synced: min(old.synced, length), overwritten: old.overwritten.filter { $0.offset < length })
            }
        }
    }

    public func remove(_ path: String) {
        state.withLock { s in
            guard (try? check(&s)) != nil else { return }
            let lengths = s.lengths.removeValue(forKey: path)
            if s.unsyncedNames.remove(path) != nil {
                real.remove(path)  // never durable: gone either way
                return
            }
            // Kept aside until a directory sync makes the removal durable.
            let kept = keep(path, &s)
            guard Glibc.rename(path, kept) == 0 else { return }
            s.nameChanges.append(.removed(path: path, keptAt: kept))
            if let lengths { s.lengths[kept] = lengths }
        }
    }

    public func rename(_ from: String, _ to: String) throws(FileError) {
        try state.withLock { s throws(FileError) in
            try check(&s)
            var replaced: String?
            if access(to, F_OK) == 0 {
                let kept = keep(to, &s)
                guard Glibc.rename(to, kept) == 0 else { throw FileError(errno) }
                replaced = kept
            }
            try real.rename(from, to)
            if let lengths = s.lengths.removeValue(forKey: from) { s.lengths[to] = lengths }
            for (fd, path) in s.open where path == from { s.open[fd] = to }
            if s.unsyncedNames.remove(from) != nil {
                // Created and renamed before any directory sync: the new name is just as undurable.
                s.unsyncedNames.insert(to)
                if let replaced { s.nameChanges.append(.removed(path: to, keptAt: replaced)) }
            } else {
                s.nameChanges.append(.renamed(from: from, to: to, replaced: replaced))
            }
        }
    }

    public func dropCache(_ fd: Int32, from offset: Int, to end: Int) {
        state.withLock { s in
            s.dropCalls += 1
            if let path = s.open[fd], let lengths = s.lengths[path], end > lengths.synced {
                s.droppedUnsynced.append("\(path): \(offset)..<\(end), synced \(lengths.synced)")
            }
            real.dropCache(fd, from: offset, to: end)
        }
    }

    public func close(_ fd: Int32) {
        state.withLock { s in
            // After power loss the descriptor stays open until the ledger closes it; nothing more reaches the disk.
            real.close(fd)
            s.open[fd] = nil
        }
    }
}
