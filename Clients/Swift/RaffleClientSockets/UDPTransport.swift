public import NIOCore
import NIOPosix
public import RaffleClient
import RaffleWire
import Synchronization

/// `RaffleTransport` over UDP (PROTOCOL.md §13) for clients on lossy networks: one frame per
/// datagram, no handshake. A request that gets no reply is retransmitted (same request id) after a
/// timeout that grows with full jitter — `initialTimeout`, doubling, at most `maxTimeout` — until a
/// reply comes or `giveUpAfter` passes (then `.timedOut`, which `RaffleClient` retries within its
/// deadline and budget). Retransmissions are harmless: the server deduplicates, so an entry whose
/// ack was lost comes back `already_entered`. Throttled replies are handed to `RaffleClient`, which
/// waits the server's retry-after. Frames carry a CRC32C, as UDP requires.
///
/// Datagrams stay under `maxDatagramBytes` (default 1,200: at most 72 entries per batch); larger
/// batches are refused before sending. No admin API and no long-lived streams over UDP.
public final class UDPTransport: RaffleTransport {
    /// Deliberate faults on this client's side of the path, for testing resilience: a share of
    /// datagrams dropped (each way), duplicated, or held back a few milliseconds (reordered).
    public struct Impairment: Sendable, Hashable {
        public var dropShare: Double
        public var duplicateShare: Double
        public var reorderShare: Double
        public var seed: UInt64

        public init(dropShare: Double = 0, duplicateShare: Double = 0, reorderShare: Double = 0, seed: UInt64 = 1) {
            self.dropShare = dropShare
            self.duplicateShare = duplicateShare
            self.reorderShare = reorderShare
            self.seed = seed
        }
    }

    /// Retransmission timing and size limits (defaults documented on each).
    public struct Timing: Sendable, Hashable {
        /// First retransmission timeout. Default 100 ms.
        public var initialTimeout: Duration = .milliseconds(100)
        /// Largest retransmission timeout. Default 1 s.
        public var maxTimeout: Duration = .seconds(1)
        /// One `send` gives up (`.timedOut`) after this long without a reply. Default 5 s.
        public var giveUpAfter: Duration = .seconds(5)
        /// Largest datagram sent. Default 1,200 bytes.
        public var maxDatagramBytes = 1_200

        public init() {}
    }

    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let timing: Timing
    private let impairment: Impairment?
    private let state = SharedConnection<Socket>()
    private let rng: Mutex<SplitMix>
    /// Datagrams put on the wire (first sends, retransmissions and duplicates).
    private let sentCount = Atomic<Int>(0)

    final class Socket: Sendable {
        let channel: any Channel
        let remote: SocketAddress
        let waiters: ReplyWaiters

        init(channel: any Channel, remote: SocketAddress, waiters: ReplyWaiters) {
            self.channel = channel
            self.remote = remote
            self.waiters = waiters
        }
    }

    /// A transport to `host:port` (the server's UDP port).
    public init(host: String, port: Int, timing: Timing = .init(), impairment: Impairment? = nil, group: (any EventLoopGroup)? = nil) {
        self.host = host
        self.port = port
        self.timing = timing
        self.impairment = impairment
        self.group = group ?? MultiThreadedEventLoopGroup.singleton
        rng = Mutex(SplitMix(seed: impairment?.seed ?? UInt64.random(in: 0...UInt64.max)))
    }

    /// Datagrams sent so far, retransmissions included.
    public var datagramsSent: Int { sentCount.load(ordering: .relaxed) }

    public var requiresChecksum: Bool { true }

    private func roll() -> Double { rng.withLock { Double($0.next() >> 11) / Double(1 << 53) } }

    private func socket() async throws -> Socket {
        try await state.get(usable: { _ in true }) { [self] in try await openSocket() }
    }

    /// Opens the transport's socket (once for every caller waiting: `SharedConnection`).
    private func openSocket() async throws -> Socket {
        let remote: SocketAddress
        do { remote = try SocketAddress.makeAddressResolvingHost(host, port: port) } catch {
            throw RaffleClientError(.connectionFailed, "cannot resolve \(host): \(error)")
        }
        let waiters = ReplyWaiters()
        let dropShare = impairment?.dropShare ?? 0
        let roll: @Sendable () -> Double = { [self] in self.roll() }
        let channel: any Channel
        do {
            channel = try await DatagramBootstrap(group: group)
                .channelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.addHandler(DatagramReader { bytes in
                            guard bytes.count >= Wire.headerSize else { return }
                            if dropShare > 0 && roll() < dropShare { return }  // the reply is "lost"
                            let id = bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 12, as: UInt64.self).littleEndian }
                            waiters.deliver(id: id, bytes)
                        })
                    }
                }
                .bind(host: remote.protocol == .inet6 ? "::" : "0.0.0.0", port: 0).get()
        } catch {
            throw RaffleClientError(.connectionFailed, "cannot open a UDP socket: \(error)")
        }
        return Socket(channel: channel, remote: remote, waiters: waiters)
    }

    private func transmit(_ datagram: [UInt8], on s: Socket) {
        var copies = 1
        var delay: Int64 = 0
        if let impairment {
            if roll() < impairment.dropShare { copies = 0 }
            if copies == 1 && roll() < impairment.duplicateShare { copies = 2 }
            if roll() < impairment.reorderShare { delay = 1 + Int64(roll() * 20) }
        }
        for _ in 0..<copies {
            sentCount.add(1, ordering: .relaxed)
            let envelope = AddressedEnvelope(remoteAddress: s.remote, data: ByteBuffer(bytes: datagram))
            if delay > 0 {
                let channel = s.channel
                channel.eventLoop.scheduleTask(in: .milliseconds(delay)) { channel.writeAndFlush(envelope, promise: nil) }
            } else {
                s.channel.writeAndFlush(envelope, promise: nil)
            }
        }
    }

    public func send(frames: [UInt8], authorization: String?) async throws -> FramesReply {
        let ids = requestIDs(of: frames)
        guard ids.count == 1, let id = ids.first else { throw RaffleClientError(.invalidRequest, "UDP carries exactly one frame per datagram") }
        guard frames.count <= timing.maxDatagramBytes else {
            throw RaffleClientError(
                .invalidRequest,
                "a \(frames.count)-byte frame is over the \(timing.maxDatagramBytes)-byte UDP limit: send at most \((timing.maxDatagramBytes - 40) / 16) entries per batch")
        }
        let s = try await socket()
        let start = ContinuousClock.now
        var timeout = timing.initialTimeout
        while ContinuousClock.now - start < timing.giveUpAfter {
            let wait = min(timeout, timing.giveUpAfter - (ContinuousClock.now - start))
            let channel = s.channel
            let waiters = s.waiters
            let reply = await s.waiters.wait(for: id) {
                transmit(frames, on: s)
                let nanos = wait.components.seconds * 1_000_000_000 + wait.components.attoseconds / 1_000_000_000
                channel.eventLoop.scheduleTask(in: .nanoseconds(nanos)) { waiters.cancel(id) }
            }
            if let reply { return FramesReply(status: 200, body: reply) }
            if Task.isCancelled { break }
            // No reply in time: back off (full jitter on the doubled timeout) and send again.
            let doubled = min(timeout * 2, timing.maxTimeout)
            timeout = timing.initialTimeout + (doubled - timing.initialTimeout) * roll()
        }
        throw RaffleClientError(.timedOut, "no UDP reply from \(host):\(port) to request \(id) within \(timing.giveUpAfter)")
    }

    /// UDP keeps its own clock (retransmission timers on the event loop, `giveUpAfter`): the attempt
    /// timeout needs no timer task of its own.
    public func send(frames: [UInt8], authorization: String?, timeout: Duration) async throws -> FramesReply {
        try await send(frames: frames, authorization: authorization)
    }

    public func admin(method: String, path: String, body: [UInt8]?, authorization: String?) async throws -> AdminReply {
        throw RaffleClientError(.invalidRequest, "admin calls need the HTTP/2 transport (UDP carries entry frames only)")
    }

    public func openStream(authorization: String?) async throws -> any FrameStream {
        throw RaffleClientError(.invalidRequest, "long-lived streams need HTTP/2 or raw TCP, not UDP")
    }

    public func close() async {
        if let s = state.take() {
            s.waiters.failAll("closed")
            try? await s.channel.close()
        }
    }
}

/// Hands each received datagram's bytes on.
final class DatagramReader: ChannelInboundHandler {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    private let onDatagram: @Sendable ([UInt8]) -> Void

    init(_ onDatagram: @escaping @Sendable ([UInt8]) -> Void) { self.onDatagram = onDatagram }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        onDatagram(Array(envelope.data.readableBytesView))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP "port unreachable" and the like: the retransmission timer handles it.
    }
}

/// A small seeded generator (SplitMix64) for the impairment rolls and the timeout jitter.
struct SplitMix: RandomNumberGenerator, Sendable {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
