import Foundation

/// A value behind a lock. The client core uses this instead of `Synchronization.Mutex`/`Atomic`,
/// which need iOS 18 / macOS 15: with it the core runs on iOS 16 / macOS 13 (where `Duration` and
/// `ContinuousClock` begin).
///
/// `@unchecked Sendable`: `value` is read and written only inside `withLock`, under `lock`, so no two
/// threads ever touch it at once; `lock` itself is thread-safe.
final class Locked<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Value

    init(_ value: Value) { self.value = value }

    /// Runs `body` with the value, holding the lock.
    func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        lock.lock()
        defer { lock.unlock() }
        return try body(&value)
    }
}

extension Locked where Value == UInt64 {
    /// Adds `n`; returns the value before.
    @discardableResult
    func add(_ n: UInt64) -> UInt64 { withLock { old in defer { old &+= n }; return old } }

    /// The value now.
    func load() -> UInt64 { withLock { $0 } }
}
