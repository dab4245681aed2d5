import NIOCore
import RaffleClient
import RaffleWire
import Synchronization

/// Request ids of the frames in `bytes` (frames back to back), read from their headers.
func requestIDs(of bytes: [UInt8]) -> [UInt64] {
    var ids: [UInt64] = []
    var offset = 0
    while offset + Wire.headerSize <= bytes.count {
        let length = bytes.withUnsafeBytes { Int($0.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self).littleEndian) }
        ids.append(bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: offset + 12, as: UInt64.self).littleEndian })
        offset += Wire.headerSize + length
    }
    return ids
}

/// Reply frames waited for by request id, shared by a socket's reader and its callers. Whoever
/// removes a waiter resumes it, so each is resumed exactly once.
final class ReplyWaiters: Sendable {
    private let waiters = Mutex<[UInt64: CheckedContinuation<[UInt8]?, Never>]>([:])
    private let failed = Mutex<String?>(nil)

    /// Waits for the reply to `id`; nil if `failAll`, `cancel(id)` or task cancellation came first.
    /// `registered` runs once the waiter is in place (send the request there, so a fast reply
    /// cannot arrive before anyone waits for it).
    func wait(for id: UInt64, registered: () -> Void) async -> [UInt8]? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let (refused, displaced) = waiters.withLock { w -> (Bool, CheckedContinuation<[UInt8]?, Never>?) in
                    if failed.withLock({ $0 }) != nil { return (true, nil) }
                    defer { w[id] = continuation }
                    return (false, w[id])
                }
                displaced?.resume(returning: nil)  // an earlier wait for the same id gives way
                if refused { continuation.resume(returning: nil) } else { registered() }
            }
        } onCancel: {
            cancel(id)
        }
    }

    /// Delivers a reply frame; false if nobody waits for it (a late duplicate).
    @discardableResult
    func deliver(id: UInt64, _ frame: [UInt8]) -> Bool {
        guard let c = waiters.withLock({ $0.removeValue(forKey: id) }) else { return false }
        c.resume(returning: frame)
        return true
    }

    /// Gives up waiting for `id` (a timer).
    func cancel(_ id: UInt64) {
        waiters.withLock { $0.removeValue(forKey: id) }?.resume(returning: nil)
    }

    /// The connection is gone: every waiter gets nil, and later waits are refused.
    func failAll(_ why: String) {
        failed.withLock { $0 = why }
        let all = waiters.withLock { w in defer { w.removeAll() }; return w }
        for (_, c) in all { c.resume(returning: nil) }
    }

    var failure: String? { failed.withLock { $0 } }
}
