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
final class H2ServerConnection: ChannelInboundHandler, HTTP2SessionDelegate, LoopConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let loop: LoopContext
    private let logger: Logger
    private var session: HTTP2Session?
    private var context: ChannelHandlerContext?
    private var table = StreamTable()
    private var pendingSlots: [Int] = []
    private var headers = HeaderBlock()

    private var bytesIn = 0
    private var handshakeDone = false
    private var lastActivityNanos: UInt64
    private var nowNanos: UInt64 = 0
    private var nowWallMilliseconds: Int64 = 0
    private var glitches: GlitchBudget
    private var closing = false
    private var wantsClose = false
    /// True while nghttp2 is running our callbacks (inside `receive` / `drainOutput`).
    private var inSession = false
    private var draining = false
    private var readPaused = false
    private var lifetime = ConnectionLifetime()
    private let admin: AdminAPI
    /// The anonymous class's bucket for this connection.
    private var anonymousBucket: LocalGCRA
    /// The last `authorization` value seen on this connection and whom it named: HPACK makes
    /// clients repeat it on every request, so it is compared once, not per request.
    private var lastAuthorization: [UInt8] = []
    private var lastClient: Int?

    init(loop: LoopContext, admin: AdminAPI, logger: Logger) {
        self.loop = loop
        self.admin = admin
        self.logger = logger
        let now = monotonicNanoseconds()
        lastActivityNanos = now
        glitches = GlitchBudget(burst: loop.configuration.glitchBurst, perSecond: loop.configuration.glitchesPerSecond, now: now)
        anonymousBucket = LocalGCRA(loop.configuration.admission.anonymous)
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

    private func teardown() {
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
    private func flushOutput() {
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
    private func close() {
        wantsClose = true
        if !inSession { flushOutput() }
    }

    private func closeNow() {
        guard !closing, let context else { return }
        closing = true
        context.close(promise: nil)
    }

    private func checkTimeouts() {
        guard let session, !closing else { return }
        let now = monotonicNanoseconds()
        let idleNanos = UInt64(max(loop.configuration.idleTimeoutMilliseconds, 0)) * 1_000_000
        let handshakeNanos = UInt64(max(loop.configuration.handshakeTimeoutMilliseconds, 0)) * 1_000_000
        if !handshakeDone && now - lastActivityNanos > handshakeNanos {
            logger.debug("closing connection: HTTP/2 handshake not completed in time")
            close()
        } else if table.openCount == 0 && now - lastActivityNanos > idleNanos {
            session.goAway(errorCode: HTTP2Session.noError)
            draining = true
            flushOutput()
        }
    }

    /// Graceful shutdown: GOAWAY now (no new streams), close once in-flight streams are answered.
    func beginShutdown() {
        guard let session, !closing else { return }
        session.goAway(errorCode: HTTP2Session.noError)
        draining = true
        flushOutput()
    }

    /// Abuse accounting: a token bucket of "glitches"; when it runs dry, GOAWAY(ENHANCE_YOUR_CALM).
    private func glitch() {
        if !glitches.spend(now: monotonicNanoseconds()), let session, !draining {
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
    private func slot(of stream: Int32) -> Int? { table.slot(of: stream) }

    private func releaseStream(_ i: Int) {
        let id = table.streams[i].id
        table.streams[i].partial.drop(loop)
        if table.streams[i].unconsumed > 0 {
            session?.consume(stream: id, count: table.streams[i].unconsumed)
            table.streams[i].unconsumed = 0
        }
        table.close(i)
    }

    // MARK: - HTTP2SessionDelegate

    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult {
        if let i = slot(of: stream) {
            // Trailers on an open stream: allowed, counted like headers.
            table.streams[i].headerCount = 0
            return .ok
        }
        _ = table.open(stream, now: nowNanos)
        loop.metrics.streams.increment()
        return .ok
    }

    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let i = slot(of: stream) else { return .ok }
        let verdict = table.streams[i].takeHeader(
            name: name, value: value, maxFields: loop.configuration.maxHeaderFields, maxBytes: Int(loop.configuration.http2.maxHeaderListSize)
        ) { value in
            if !value.elementsEqual(lastAuthorization) {
                lastAuthorization = Array(value)
                lastClient = loop.admission.identify(authorization: value)
            }
            return lastClient
        }
        guard verdict == .ok else {
            glitch()
            return .resetStream
        }
        return .ok
    }

    func headersComplete(stream: Int32, endStream: Bool) {
        guard let i = slot(of: stream) else { return }
        if table.streams[i].route == .pending {
            if table.streams[i].headerCount == 0 { glitch() }
            switch table.streams[i].routing(servesEntries: admin.servesEntries) {
            case .entries:
                table.streams[i].route = .entries
            case .admin:
                table.streams[i].route = .admin
            case .refuse(let status, let message):
                answerJSON(i, status: status, AdminAPI.errorJSON(message))
                table.streams[i].route = .discard
            case .badContentType:
                table.streams[i].route = .discard
                table.streams[i].addError(ProtocolError(code: .badContentType, message: "content-type must be \(Wire.contentType)"), loop: loop)
                table.streams[i].finished = true
                settle(i)
            }
        }
        if endStream { requestEnded(i) }
    }

    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let i = slot(of: stream) else { return .ok }
        switch table.streams[i].route {
        case .entries where !table.streams[i].fatal:
            ingest(i, bytes)
        case .admin:
            if table.streams[i].adminBody.count + bytes.count <= loop.configuration.maxAdminBodyBytes {
                table.streams[i].adminBody.append(contentsOf: bytes)
            } else {
                table.streams[i].adminBodyTooLarge = true
            }
            session?.consume(stream: stream, count: bytes.count)
        default:
            session?.consume(stream: stream, count: bytes.count)
        }
        return .ok
    }

    func dataFrameComplete(stream: Int32, length: Int, endStream: Bool) {
        if length == 0 && !endStream { glitch() }
        guard endStream, let i = slot(of: stream) else { return }
        requestEnded(i)
    }

    func readBody(stream: Int32, into buffer: UnsafeMutableRawBufferPointer, endOfBody: inout Bool) -> Int? {
        guard let i = slot(of: stream) else {
            endOfBody = true
            return 0
        }
        let available = table.streams[i].replies.sendable
        if available > 0 {
            let n = min(available, buffer.count)
            table.streams[i].replies.out.withUnsafeReadableBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<n]))
            }
            table.streams[i].replies.out.moveReaderIndex(forwardBy: n)
            table.streams[i].replies.compactIfSent()
            if table.streams[i].isDrained { endOfBody = true }
            return n
        }
        if table.streams[i].isDrained {
            endOfBody = true
            return 0
        }
        table.streams[i].deferred = true
        return nil
    }

    func frameSent(stream: Int32, type: UInt8, endStream: Bool) {
        guard endStream, let i = slot(of: stream) else { return }
        // The response is complete. If the request body is still coming (a connection-level frame
        // error ended the stream early), reset it with NO_ERROR as PROTOCOL.md §11 says.
        if !table.streams[i].requestEnded { session?.resetStream(stream, errorCode: HTTP2Session.noError) }
    }

    func invalidFrame(stream: Int32, type: UInt8) {
        glitch()
    }

    func streamClosed(stream: Int32, errorCode: UInt32) {
        guard let i = slot(of: stream) else { return }
        if table.streams[i].waiting, let p = pendingSlots.firstIndex(of: i) { pendingSlots.remove(at: p) }
        releaseStream(i)
        if draining && table.openCount == 0 { close() }  // deferred to the next flush when in a callback
    }

    // MARK: - Entry path

    /// Decodes and admits whole frames from `bytes` (the shared exchange logic), then hands the
    /// bytes back to flow control unless replies are piling up.
    private func ingest(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
        let now = IngestContext(client: table.streams[i].client, nowNanos: nowNanos, wallMilliseconds: nowWallMilliseconds)
        table.streams[i].ingest(bytes, loop: loop, at: now, anonymous: &anonymousBucket)
        consume(i, bytes.count)
        settle(i)
    }

    /// Reopens the flow-control window unless replies are piling up waiting for the log.
    private func consume(_ i: Int, _ count: Int) {
        table.streams[i].unconsumed += count
        let pending = table.streams[i].replies.out.readableBytes
        if pending <= loop.configuration.maxPendingReplyBytesPerStream {
            session?.consume(stream: table.streams[i].id, count: table.streams[i].unconsumed)
            table.streams[i].unconsumed = 0
        }
    }

    private func requestEnded(_ i: Int) {
        guard !table.streams[i].requestEnded else { return }
        table.streams[i].requestEnded = true
        switch table.streams[i].route {
        case .entries:
            table.streams[i].entriesBodyEnded(loop)
        case .admin:
            if table.streams[i].adminBodyTooLarge {
                table.streams[i].answer(AdminResponse(status: 413, json: AdminAPI.errorJSON("request body over \(loop.configuration.maxAdminBodyBytes) bytes")))
            } else {
                let answer = admin.handle(
                    get: table.streams[i].isGet, post: table.streams[i].isPost, path: table.streams[i].path, body: table.streams[i].adminBody,
                    authorization: table.streams[i].authorization)
                switch answer {
                case .now(let response):
                    table.streams[i].answer(response)
                case .later(let work):
                    // The stream stays open, unfinished, until the ledger has answered.
                    let id = table.streams[i].id
                    let connection = NIOLoopBound(self, eventLoop: loop.eventLoop)
                    loop.eventLoop.makeFutureWithTask(work).whenSuccess { connection.value.adminAnswered(stream: id, $0) }
                    return
                }
            }
        case .pending, .discard:
            break
        }
        table.streams[i].finished = true
        settle(i)
    }

    /// A ledger-backed admin answer arrived (on the loop): send it unless the stream is gone.
    private func adminAnswered(stream id: Int32, _ response: AdminResponse) {
        guard session != nil, let i = slot(of: id), table.streams[i].active, !table.streams[i].finished else { return }
        table.streams[i].answer(response)
        table.streams[i].finished = true
        settle(i)
        flushOutput()
    }

    private func answerJSON(_ i: Int, status: Int, _ body: [UInt8]) {
        table.streams[i].answer(AdminResponse(status: status, json: body))
        table.streams[i].finished = true
        settle(i)
    }

    // MARK: - Durability

    /// Releases what is durable on stream `i`; registers to be woken if something is not yet.
    private func settle(_ i: Int) {
        release(i)
        if table.streams[i].hasUnreleased && !table.streams[i].waiting {
            table.streams[i].waiting = true
            pendingSlots.append(i)
            loop.wait(self)
        }
    }

    private func release(_ i: Int) {
        let progressed = table.streams[i].advance(loop) { inSession ? nowNanos : monotonicNanoseconds() }
        if (progressed || table.streams[i].isDrained) {
            if !table.streams[i].headersSubmitted {
                submitHeaders(i)
            } else if table.streams[i].deferred {
                table.streams[i].deferred = false
                session?.resumeData(stream: table.streams[i].id)
            }
        }
        if progressed && table.streams[i].unconsumed > 0 {
            consume(i, 0)
        }
    }

    private func submitHeaders(_ i: Int) {
        guard let session else { return }
        headers.removeAll()
        headers.add(":status", integer: table.streams[i].status)
        headers.add("content-type", table.streams[i].bodyKind.contentType)
        table.streams[i].extraResponseFields(durability: loop.ledger.durability) { headers.add($0, $1) }
        do {
            try session.submitResponse(stream: table.streams[i].id, headers: headers, hasBody: true)
            table.streams[i].headersSubmitted = true
        } catch {
            logger.debug("cannot submit a response on stream \(table.streams[i].id): \(error)")
        }
    }

    /// Called by the loop after the log committed: release what became durable, then one write.
    func durabilityAdvanced() {
        guard session != nil else { return }
        var still: [Int] = []
        for i in pendingSlots where table.streams[i].active {
            release(i)
            if table.streams[i].hasUnreleased { still.append(i) } else { table.streams[i].waiting = false }
        }
        pendingSlots = still
        if !still.isEmpty { loop.wait(self) }
        flushOutput()
    }
}
