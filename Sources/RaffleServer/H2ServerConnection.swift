import Logging
import NIOCore
import RaffleAdmission
import RaffleHTTP2
import RaffleLedger
import RaffleWire
import RaffleWireNIO

/// One HTTP/2 connection: a NIO channel handler that drives an nghttp2 server session through
/// memory (`mem_recv` / `mem_send`) and serves the entry path and the admin API on its streams.
///
/// Entry path: body bytes are decoded in place — straight from nghttp2's buffer when a DATA chunk
/// holds whole frames, otherwise after one copy into an ingest buffer preallocated at start-up —
/// admitted by the ledger, and answered with an ack that is released only once the log has made it
/// durable (the stream's body provider returns `NGHTTP2_ERR_DEFERRED` until then). Output of a read
/// or a commit is coalesced into one write.
final class H2ServerConnection: ChannelInboundHandler, LoopConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let loop: LoopContext
    let logger: Logger
    var session: HTTP2Session?
    var context: ChannelHandlerContext?
    var table = StreamTable()
    var pendingSlots: [Int] = []
    var headers = HeaderBlock()
    /// The head of a plain entries answer (200, frames, not throttled), built once with the same
    /// `responseFields` as any other: nearly every response is this one, and building it per response
    /// (status digits, content-type string, field list) was ~4 % of the durable single-entry path's
    /// time in a profile (Bench/RESULTS.md).
    let plainFramesHead: HeaderBlock
    var prefetcher = EntryPrefetcher()

    var bytesIn = 0
    var handshakeDone = false
    var lastActivityNanos: UInt64
    /// Last time the peer took response bytes (nghttp2 read a body chunk: its window allowed it) or
    /// its socket drained (writable again): the slow-reader check measures from here.
    var lastOutputProgressNanos: UInt64
    var nowNanos: UInt64 = 0
    var nowWallMilliseconds: Int64 = 0
    var glitches: GlitchBudget
    var closing = false
    var wantsClose = false
    /// True while nghttp2 is running our callbacks (inside `receive` / `drainOutput`).
    var inSession = false
    var draining = false
    var readPaused = false
    var lifetime = ConnectionLifetime()
    let admin: AdminAPI
    /// The anonymous class's bucket for this connection.
    var anonymousBucket: LocalGCRA
    /// The last `authorization` value seen on this connection and whom it named: HPACK makes
    /// clients repeat it on every request, so it is compared once, not per request.
    var lastAuthorization: [UInt8] = []
    var lastClient: Int?

    init(loop: LoopContext, admin: AdminAPI, logger: Logger) {
        self.loop = loop
        self.admin = admin
        self.logger = logger
        let now = monotonicNanoseconds()
        lastActivityNanos = now
        lastOutputProgressNanos = now
        glitches = GlitchBudget(burst: loop.configuration.glitchBurst, perSecond: loop.configuration.glitchesPerSecond, now: now)
        anonymousBucket = LocalGCRA(loop.configuration.admission.anonymous)
        var head = HeaderBlock()
        let plain = StreamState()
        head.add(":status", integer: plain.status)
        plain.responseFields(durability: loop.ledger.durability) { head.add($0, $1) }
        plainFramesHead = head
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let check = TimeAmount.milliseconds(max(min(loop.configuration.idleTimeoutMilliseconds, loop.configuration.handshakeTimeoutMilliseconds) / 4, 10))
        lifetime.begin(self, loop: loop, on: context.eventLoop, every: check) { $0.checkTimeouts() }
        do {
            let session = try HTTP2Session(role: .server, delegate: self, options: loop.configuration.http2Options)
            try session.submitSettings(loop.configuration.http2)
            self.session = session
        } catch {
            logger.error("cannot start an HTTP/2 session: \(error)")
            context.close(promise: nil)
            return
        }
        if context.channel.isActive { flushOutput() }
    }

    func channelActive(context: ChannelHandlerContext) {
        flushOutput()
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        teardown()
        self.context = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        teardown()
        context.fireChannelInactive()
    }

    func teardown() {
        // Delete the session first so no callback can fire into a half-torn-down handler.
        session?.close()
        session = nil
        guard lifetime.end(self, loop: loop) else { return }
        for i in table.openSlots { releaseStream(i) }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let session, !closing else { return }
        // One clock read per read event, shared by every stream and batch it carries.
        lastActivityNanos = monotonicNanoseconds()
        nowNanos = lastActivityNanos
        nowWallMilliseconds = wallClockMilliseconds()
        inSession = true
        let result: Result<Int, HTTP2Session.Failure> = buffer.withUnsafeReadableBytes { bytes in
            prefetcher.scan(bytes, decoder: loop.decoder, ledger: loop.ledger)
            do throws(HTTP2Session.Failure) { return .success(try session.receive(bytes)) } catch { return .failure(error) }
        }
        inSession = false
        switch result {
        case .success(let n):
            bytesIn += n
            if !handshakeDone && bytesIn >= 24 + 9 { handshakeDone = true }
        case .failure(let error):
            logger.debug("closing connection: \(error)")
            flushOutput()
            close()
            return
        }
        flushOutput()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { lastOutputProgressNanos = monotonicNanoseconds() }
        if context.channel.isWritable, readPaused {
            readPaused = false
            context.channel.setOption(ChannelOptions.autoRead, value: true).whenComplete { _ in }
        }
        context.fireChannelWritabilityChanged()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error: \(error)")
        close()
    }

    /// Sends everything nghttp2 has queued, as one write, and closes when the session is done.
    func flushOutput() {
        guard !inSession, let context, let session else { return }
        var out = context.channel.allocator.buffer(capacity: 0)
        inSession = true
        do {
            try session.drainOutput(into: &out)
        } catch {
            inSession = false
            logger.debug("HTTP/2 send failed: \(error)")
            closeNow()
            return
        }
        inSession = false
        if out.readableBytes > 0 {
            context.writeAndFlush(wrapOutboundOut(out), promise: nil)
            // Bound unsent bytes: the channel's high-water mark is maxUnsentBytesPerConnection; past
            // it, stop reading until the socket drains (see channelWritabilityChanged).
            if !context.channel.isWritable {
                if !readPaused {
                    readPaused = true
                    context.channel.setOption(ChannelOptions.autoRead, value: false).whenComplete { _ in }
                }
            }
        }
        if wantsClose || !session.isAlive || (draining && table.openCount == 0) { closeNow() }
    }

    /// Asks for the connection to close once pending output is written. Never tears down inside
    /// an nghttp2 callback (the session would be deleted under its own feet): the close happens in
    /// `flushOutput`, which only runs outside `mem_recv` / `mem_send`.
    func close() {
        wantsClose = true
        if !inSession { flushOutput() }
    }

    func closeNow() {
        guard !closing, let context else { return }
        closing = true
        context.close(promise: nil)
    }

    func checkTimeouts() {
        guard let session, !closing else { return }
        let now = monotonicNanoseconds()
        let idleNanos = UInt64(max(loop.configuration.idleTimeoutMilliseconds, 0)) * 1_000_000
        let handshakeNanos = UInt64(max(loop.configuration.handshakeTimeoutMilliseconds, 0)) * 1_000_000
        // Quiet for a second with no stream open: nghttp2's blocks kept for reuse go back to malloc,
        // so an idle connection holds no more than before the pool (HTTP2Session.Options).
        if table.openCount == 0 && now &- lastActivityNanos > 1_000_000_000 { session.trimMemory() }
        if !handshakeDone && now - lastActivityNanos > handshakeNanos {
            logger.debug("closing connection: HTTP/2 handshake not completed in time")
            close()
        } else if table.openCount == 0 && now - lastActivityNanos > idleNanos {
            session.goAway(errorCode: HTTP2Session.noError)
            draining = true
            flushOutput()
        } else if !outputBlockedOnPeer {
            // Nothing waits on the peer: the slow-reader clock starts over (a connection quiet for
            // an hour whose next response meets a full socket must get a whole idle timeout).
            lastOutputProgressNanos = now
        } else if now - lastOutputProgressNanos > idleNanos {
            // A slow reader: responses wait for a window the peer never opens, or for a socket it
            // never reads, while its streams keep the connection from idling out. Reading the
            // peer's frames (PINGs, SETTINGS) does not count: only response bytes it takes.
            logger.info("closing connection: the peer has taken no response bytes for the idle timeout")
            loop.metrics.slowReaders.increment()
            closeNow()
        }
    }

    /// Response bytes wait on the peer: the socket is full, or a stream has released bytes that
    /// flow control keeps nghttp2 from taking.
    var outputBlockedOnPeer: Bool {
        if let context, !context.channel.isWritable { return true }
        return table.openSlots.contains { table.streams[$0].replies.sendable > 0 }
    }

    /// Graceful shutdown: GOAWAY now (no new streams), close once in-flight streams are answered.
    func beginShutdown() {
        guard let session, !closing else { return }
        session.goAway(errorCode: HTTP2Session.noError)
        draining = true
        flushOutput()
    }

    /// Abuse accounting: a token bucket of "glitches"; when it runs dry, GOAWAY(ENHANCE_YOUR_CALM).
    func glitch(cost: Int = 1) {
        if !glitches.spend(now: monotonicNanoseconds(), cost: cost), let session, !draining {
            logger.info("GOAWAY(ENHANCE_YOUR_CALM): too many empty, invalid or oversized frames on one connection")
            loop.metrics.goaways.increment()
            session.goAway(errorCode: HTTP2Session.enhanceYourCalm)
            draining = true
            // nghttp2 sends the GOAWAY on the next flush, then the connection closes.
            close()
        }
    }

    // MARK: - Stream table

    @inline(__always)
    func slot(of stream: Int32) -> Int? { table.slot(of: stream) }

    func releaseStream(_ i: Int) {
        let id = table.streams[i].id
        table.streams[i].partial.drop(loop)
        if table.streams[i].unconsumed > 0 {
            session?.consume(stream: id, count: table.streams[i].unconsumed)
            table.streams[i].unconsumed = 0
        }
        table.close(i)
    }
}
