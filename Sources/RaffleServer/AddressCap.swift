import NIOCore
import Synchronization

/// The per-address connection cap: at most `limit` open TCP connections (HTTP/2, HTTP/1.1, raw TCP
/// together) from one IPv4 address or one IPv6 /64, so one host cannot hold thousands of idle
/// connections. A connection over the cap is closed as it is accepted, counted and logged with the
/// peer. 0 turns the cap off (a load balancer in front makes every connection come from its address).
/// Memory: one counter per address with an open connection.
final class AddressCap: Sendable {
    let limit: Int
    private let open = Mutex<[AddressKey: Int]>([:])

    init(limit: Int) { self.limit = limit }

    /// Takes a place for `address`; false when its connections are at the cap.
    func take(_ address: SocketAddress?) -> Bool {
        guard limit > 0, let key = AddressKey(address) else { return true }
        return open.withLock { counts in
            let n = counts[key, default: 0]
            guard n < limit else { return false }
            counts[key] = n + 1
            return true
        }
    }

    /// Gives the place back when the connection closes.
    func release(_ address: SocketAddress?) {
        guard limit > 0, let key = AddressKey(address) else { return }
        open.withLock { counts in
            let n = counts[key, default: 0]
            if n <= 1 { counts[key] = nil } else { counts[key] = n - 1 }
        }
    }

    /// Open connections from `address` now (tests, metrics).
    func count(_ address: SocketAddress?) -> Int {
        guard let key = AddressKey(address) else { return 0 }
        return open.withLock { $0[key, default: 0] }
    }

    /// Installs the cap on an accepted channel: closes it when over, else releases its place when it
    /// closes. Returns whether the channel may go on.
    func admit(_ channel: any Channel, metrics: ServerMetrics, logger: Logger) -> Bool {
        let peer = channel.remoteAddress
        guard take(peer) else {
            metrics.connectionsCapped.increment()
            logger.info("connection refused: per-address cap reached", metadata: ["peer": "\(peer.map { "\($0)" } ?? "?")", "cap": "\(limit)"])
            channel.close(promise: nil)
            return false
        }
        channel.closeFuture.whenComplete { _ in self.release(peer) }
        return true
    }
}

/// An IPv4 address, or the /64 prefix of an IPv6 one (a host controls the rest).
struct AddressKey: Hashable {
    var high: UInt64
    var low: UInt64

    init?(_ address: SocketAddress?) {
        switch address {
        case .v4(let a)?:
            high = 4
            low = UInt64(a.address.sin_addr.s_addr)
        case .v6(let a)?:
            high = 6
            low = withUnsafeBytes(of: a.address.sin6_addr) { $0.loadUnaligned(as: UInt64.self) }
        default:
            return nil
        }
    }
}

import Logging
