import NIOCore
import NIOPosix
import RaffleAdmission
import Synchronization

/// Per-address connection limits, for TCP connections (HTTP/2, HTTP/1.1, raw TCP together) from one
/// IPv4 address or one IPv6 /64:
/// - at most `limit` open at once, so one host cannot hold thousands of idle connections;
/// - at most `rate` new ones per second (a burst of twice that), so a flood that reconnects each time
///   it is cut off (rapid reset, SETTINGS/PING floods, header floods) pays for its new connections
///   and cannot keep the server busy setting them up.
/// A connection over either is closed as it is accepted, counted (`raffled_connections_refused_total`
/// with `reason` `per_address_cap` or `per_address_rate`) and logged (at most once a second). 0 turns
/// either off (a load balancer in front makes every connection come from its address).
/// Memory: one entry per address with an open connection or a recent one (swept as they expire).
final class AddressCap: Sendable {
    /// Why a connection was refused.
    enum Refusal: Equatable {
        case open
        case rate
    }

    private struct Entry {
        var open = 0
        /// New connections, one token each (the admission buckets' GCRA); nil without a rate.
        var connections: LocalGCRA?

        /// Nothing open and the rate bucket full again: the entry can be forgotten.
        func isIdle(now: UInt64) -> Bool {
            open == 0 && (connections.map { $0.available(now: now) >= $0.limit.burst } ?? true)
        }
    }

    private struct State {
        var entries: [AddressKey: Entry] = [:]
        var sweepAt = 4_096
        var lastLogNanos: UInt64 = 0
        var unloggedRefusals = 0
    }

    let limit: Int
    let rate: Int
    private let state = Mutex(State())

    init(limit: Int, rate: Int = 0) {
        self.limit = limit
        self.rate = rate
    }

    var isEnabled: Bool { limit > 0 || rate > 0 }

    /// Takes a place for `address` at `now` (ns); nil when it may connect, else why not.
    func take(_ address: SocketAddress?, now: UInt64 = monotonicNanoseconds()) -> Refusal? {
        guard isEnabled, let key = AddressKey(address) else { return nil }
        return state.withLock { s -> Refusal? in
            let rate = self.rate
            var entry = s.entries[key] ?? Entry(connections: rate > 0 ? LocalGCRA(RateLimit(ratePerSecond: UInt64(rate), burst: UInt64(2 * rate))) : nil)
            if limit > 0 && entry.open >= limit { return .open }
            if entry.connections != nil, entry.connections?.take(1, now: now) != .admit { return .rate }
            entry.open += 1
            s.entries[key] = entry
            if s.entries.count >= s.sweepAt {
                // Addresses with nothing open and no rate debt left are forgotten.
                s.entries = s.entries.filter { !$0.value.isIdle(now: now) }
                s.sweepAt = max(4_096, s.entries.count * 2)
            }
            return nil
        }
    }

    /// Gives the place back when the connection closes.
    func release(_ address: SocketAddress?, now: UInt64 = monotonicNanoseconds()) {
        guard isEnabled, let key = AddressKey(address) else { return }
        state.withLock { s in
            guard var entry = s.entries[key] else { return }
            entry.open = max(entry.open - 1, 0)
            s.entries[key] = entry.isIdle(now: now) ? nil : entry
        }
    }

    /// Open connections from `address` now (tests, metrics).
    func count(_ address: SocketAddress?) -> Int {
        guard let key = AddressKey(address) else { return 0 }
        return state.withLock { $0.entries[key]?.open ?? 0 }
    }

    /// Addresses remembered now (tests: memory stays bounded).
    var remembered: Int { state.withLock { $0.entries.count } }

    /// Counts and logs a refusal (the log at most once a second: a flood of refusals must not become
    /// a flood of log lines).
    func refused(_ refusal: Refusal, peer: SocketAddress?, metrics: ServerMetrics, logger: Logger) {
        (refusal == .open ? metrics.connectionsCapped : metrics.connectionsRateLimited).increment()
        let now = monotonicNanoseconds()
        let more: Int? = state.withLock { s in
            s.unloggedRefusals += 1
            guard now - s.lastLogNanos >= 1_000_000_000 else { return nil }
            defer {
                s.lastLogNanos = now
                s.unloggedRefusals = 0
            }
            return s.unloggedRefusals - 1
        }
        if let more {
            logger.info(
                refusal == .open ? "connection refused: per-address cap reached" : "connection refused: per-address connection rate exceeded",
                metadata: [
                    "peer": "\(peer.map { "\($0)" } ?? "?")", "cap": "\(limit)", "rate_per_second": "\(rate)",
                    "refused_since_last_line": "\(more)",
                ])
        }
    }
}

/// Applies the per-address limits on a listening socket's pipeline, to each connection as it is
/// accepted — before it gets a pipeline of its own or a place in the event loop, so a refused
/// connection costs an accept and a close (with SO_LINGER 0: no TIME_WAIT left behind) and nothing
/// more. (Measured under a reconnecting flood: doing it in the child initializer spent ~40% of the
/// server's core setting up and tearing down channels; Bench/RESULTS.md, "The attack catalogue".)
final class AddressGate: ChannelInboundHandler {
    typealias InboundIn = any Channel
    typealias InboundOut = any Channel

    private let cap: AddressCap
    private let metrics: ServerMetrics
    private let logger: Logger

    init(cap: AddressCap, metrics: ServerMetrics, logger: Logger) {
        self.cap = cap
        self.metrics = metrics
        self.logger = logger
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let child = unwrapInboundIn(data)
        let peer = child.remoteAddress
        if let refusal = cap.take(peer) {
            cap.refused(refusal, peer: peer, metrics: metrics, logger: logger)
            if let socket = child as? any SocketOptionProvider {
                socket.setSoLinger(linger(l_onoff: 1, l_linger: 0)).whenComplete { _ in child.close(promise: nil) }
            } else {
                child.close(promise: nil)
            }
            return
        }
        let cap = self.cap
        child.closeFuture.whenComplete { _ in cap.release(peer) }
        context.fireChannelRead(data)
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
