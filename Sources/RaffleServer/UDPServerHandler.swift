import Logging
import NIOCore
import RaffleAdmission
import RaffleLedger
import RaffleWire
import RaffleWireNIO

/// The UDP endpoint of one event loop (PROTOCOL.md §13): one frame per datagram, one reply datagram
/// per request, never larger than the request. Each loop binds its own socket to the same port with
/// SO_REUSEPORT, reads with recvmmsg (NIO's vector reads) and flushes its replies together, which
/// NIO sends with sendmmsg. The entry path is the shared one (`LoopContext.answer`); an ack leaves
/// only once the log has made the batch durable, exactly as over HTTP/2.
///
/// Who: datagrams are unauthenticated, so admission is per source address — a fixed table of
/// `sourceBuckets` token buckets indexed by a hash of the address (IPv4 address, or an IPv6 /64),
/// bounded whatever the number of senders; senders that collide share a bucket, which can only make
/// them stricter. The table is shared by every loop (`UDPSourceBuckets`, atomic buckets): SO_REUSEPORT
/// spreads one address's source ports over the loops' sockets, and per-loop tables gave a sender
/// loops × the limit by changing its source port.
final class UDPServerHandler: ChannelInboundHandler, LoopConnection {
    typealias InboundIn = AddressedEnvelope<ByteBuffer>
    typealias OutboundOut = AddressedEnvelope<ByteBuffer>

    /// Source-address buckets, shared by the loops (a power of two).
    static let sourceBuckets = 4_096
    /// Acks waiting for the log per loop; past this, new batches are throttled `server_busy`.
    static let maxPendingAcks = 16_384

    /// Where a queued reply goes, and the size it may not exceed (its request's, PROTOCOL.md §13).
    private struct Peer {
        var address: SocketAddress
        var requestSize: Int
    }

    private let loop: LoopContext
    private let logger: Logger
    private let decoder: FrameDecoder
    private let maxDatagram: Int
    private var context: ChannelHandlerContext?
    private let sources: UDPSourceBuckets
    /// Unused: UDP admission goes through `sources` (the entry path's signature wants a local bucket).
    private var unusedLocal: LocalGCRA
    /// The socket's ingest session: one reply per datagram, in arrival order, released by the same
    /// reply queue a stream or TCP connection uses (durability, decisions at commit, failures); a
    /// released reply leaves as its own datagram. `finished`: shutting down.
    private var session = StreamState()
    /// One per reply mark not yet sent (`peers[k]` ↔ `session.replies.marks[k]`).
    private var peers: [Peer] = []
    /// Replies sent so far (marks before this index have left).
    private var sent = 0
    private var waiting = false

    init(loop: LoopContext, sources: UDPSourceBuckets, logger: Logger) {
        self.sources = sources
        self.loop = loop
        self.logger = logger
        maxDatagram = loop.configuration.udpMaxDatagramBytes
        var limits = loop.configuration.frameLimits
        limits.maxPayloadBytes = min(limits.maxPayloadBytes, max(maxDatagram - Wire.headerSize, 0))
        decoder = FrameDecoder(limits: limits, receiver: .server, requireChecksum: true)
        unusedLocal = LocalGCRA(loop.configuration.admission.anonymous)
        session.reset(id: 0, now: 0)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        loop.register(self)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        loop.stopWaiting(self)
        loop.unregister(self)
        self.context = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let envelope = unwrapInboundIn(data)
        let size = envelope.data.readableBytes
        loop.metrics.udpDatagrams.increment()
        // A reply may not be larger than its request, and the smallest reply is an error frame.
        guard size >= Wire.headerSize + Wire.errorPrefixSize, !session.finished else {
            loop.metrics.udpDropped.increment()
            return
        }
        let now = monotonicNanoseconds()
        let requester = Requester(
            client: nil, nowNanos: now, wallMilliseconds: wallClockMilliseconds(), source: sources.buckets[Self.bucket(of: envelope.remoteAddress)],
            transport: .udp)
        let full = session.replies.marks.count - sent >= Self.maxPendingAcks
        let marksBefore = session.replies.marks.count
        let errors = sources.errors[Self.bucket(of: envelope.remoteAddress)]
        envelope.data.withUnsafeReadableBytes { bytes in answer(bytes, size: size, requester: requester, full: full, errors: errors) }
        guard session.replies.marks.count == marksBefore + 1 else {
            loop.metrics.udpDropped.increment()  // not answered: the source's error replies are used up
            return
        }
        peers.append(Peer(address: envelope.remoteAddress, requestSize: size))
        settle()
    }

    /// Answers one datagram into the session's reply queue: one reply, never larger than the request
    /// (errors are cut to fit; an ack or pong is never larger than its request) — except an error for
    /// a source that has had its share of error replies (`UDPSourceBuckets.errorLimit`): garbage from
    /// a flood of (spoofed) sources is dropped rather than answered, so answering it cannot cost the
    /// server more than reading it.
    private func answer(_ bytes: UnsafeRawBufferPointer, size: Int, requester: Requester, full: Bool, errors: AtomicGCRA) {
        func mayAnswerError() -> Bool { errors.take(1, now: requester.nowNanos) == .admit }
        if size > maxDatagram {
            guard mayAnswerError() else { return }
            // The header's request id only if the header can be read (PROTOCOL.md §3): else 0.
            let readable = bytes[0] == 0x52 && bytes[1] == 0x46 && bytes[2] == Wire.version
            let id = readable ? bytes.loadUnaligned(fromByteOffset: 12, as: UInt64.self).littleEndian : 0
            _ = loop.answer(
                ProtocolError(code: .frameTooLarge, message: "datagram of \(size) bytes is over this server's \(maxDatagram)-byte limit", requestID: id),
                replies: &session.replies, maxReplyBytes: size, flags: .checksum)
            return
        }
        do throws(ProtocolError) {
            guard let frame = try decoder.decode(bytes, endOfInput: true) else { return }
            guard frame.frameLength == size else {
                guard mayAnswerError() else { return }
                _ = loop.answer(
                    ProtocolError(code: .malformedPayload, message: "datagram holds \(size - frame.frameLength) bytes after its frame: one frame per datagram", requestID: frame.header.requestID),
                    replies: &session.replies, maxReplyBytes: size, flags: .checksum)
                return
            }
            if full, case .entryBatch = frame.payload {
                loop.metrics.throttledServerBusy.increment()
                _ = loop.answerBusy(requestID: frame.header.requestID, replies: &session.replies, flags: .checksum)
                return
            }
            _ = loop.answer(frame, requester: requester, anonymous: &unusedLocal, replies: &session.replies, maxReplyBytes: size)
        } catch {
            loop.metrics.frameErrors.increment()
            guard mayAnswerError() else { return }
            _ = loop.answer(error, replies: &session.replies, maxReplyBytes: size, flags: .checksum)
        }
    }

    /// Sends each reply that is released now as its own datagram, in order; waits for the next
    /// commit if one is not; closes the socket at shutdown once none is left.
    private func settle() {
        guard let context else { return }
        _ = session.replies.advance(loop)
        let marks = session.replies.marks
        while sent < session.replies.markHead {
            let peer = peers[sent]
            let length = marks[sent].end - session.replies.out.readerIndex
            guard var reply = session.replies.out.readSlice(length: length) else { break }
            if reply.readableBytes > peer.requestSize {
                // Replaced at commit by a longer error (the ledger's message): cut to fit.
                var cut = ReplyQueue()
                _ = loop.answer(
                    ProtocolError(code: .unavailable, message: "the batch was not stored", requestID: marks[sent].requestID), replies: &cut,
                    maxReplyBytes: peer.requestSize, flags: marks[sent].flags)
                reply = cut.out
            }
            context.write(wrapOutboundOut(AddressedEnvelope(remoteAddress: peer.address, data: reply)), promise: nil)
            sent += 1
        }
        let dropped = session.replies.compact()
        if dropped > 0 {
            if dropped == peers.count { peers.removeAll(keepingCapacity: true) } else { peers.removeFirst(dropped) }
            sent -= dropped
        }
        if !session.replies.hasUnreleased {
            if session.finished { context.close(promise: nil) }
        } else if !waiting {
            waiting = true
            loop.wait(self)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // A datagram socket error (e.g. ICMP port unreachable for an earlier reply) concerns one
        // peer; the socket goes on.
        logger.debug("UDP socket error: \(error)")
    }

    /// Sends the acks the log has made durable, in order.
    func durabilityAdvanced() {
        waiting = false
        settle()
        context?.flush()
    }

    /// Takes no more datagrams; closes the socket once every held ack is sent.
    func beginShutdown() {
        session.finished = true
        settle()
        context?.flush()
    }

    /// The bucket of a source: the IPv4 address, or the IPv6 /64 prefix (a host controls the rest).
    static func bucket(of address: SocketAddress) -> Int {
        var key: UInt64 = 0
        switch address {
        case .v4(let a):
            key = UInt64(a.address.sin_addr.s_addr)
        case .v6(let a):
            withUnsafeBytes(of: a.address.sin6_addr) { raw in key = raw.loadUnaligned(as: UInt64.self) }
        default:
            key = 0
        }
        // Fibonacci hashing: spreads neighbouring addresses over the table.
        return Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 52) & (sourceBuckets - 1)
    }
}

/// The per-source-address buckets of the UDP endpoint, one table for every loop: atomic GCRA
/// buckets, so a source is held to one limit whichever loop's socket its datagrams reach.
final class UDPSourceBuckets: Sendable {
    /// Error replies per source: 10 a second, 20 at once. A working client sees its mistakes
    /// answered; a flood of garbage gets no more answers than that (PROTOCOL.md §13).
    static let errorLimit = RateLimit(ratePerSecond: 10, burst: 20)

    let buckets: [AtomicGCRA]
    /// Each source's allowance of error replies.
    let errors: [AtomicGCRA]

    init(limit: RateLimit) {
        buckets = (0..<UDPServerHandler.sourceBuckets).map { _ in AtomicGCRA(limit) }
        errors = (0..<UDPServerHandler.sourceBuckets).map { _ in AtomicGCRA(Self.errorLimit) }
    }
}
