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
    private var streams: [StreamState] = []
    private var freeStreamSlots: [Int] = []
    private var slotOfStream: [Int32: Int] = [:]
    private var lastStream: (id: Int32, slot: Int) = (0, -1)
    private var pendingSlots: [Int] = []
    private var headers = HeaderBlock()
    private var openStreams = 0

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
        for i in streams.indices where streams[i].active { releaseStream(i) }
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
        if wantsClose || !session.isAlive || (draining && openStreams == 0) { closeNow() }
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
        } else if openStreams == 0 && now - lastActivityNanos > idleNanos {
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
    private func slot(of stream: Int32) -> Int? {
        if lastStream.id == stream && lastStream.slot >= 0 { return lastStream.slot }
        guard let i = slotOfStream[stream] else { return nil }
        lastStream = (stream, i)
        return i
    }

    private func releaseStream(_ i: Int) {
        let id = streams[i].id
        streams[i].partial.drop(loop)
        if streams[i].unconsumed > 0 {
            session?.consume(stream: id, count: streams[i].unconsumed)
            streams[i].unconsumed = 0
        }
        streams[i].active = false
        streams[i].replies.out.clear()
        slotOfStream[id] = nil
        if lastStream.id == id { lastStream = (0, -1) }
        freeStreamSlots.append(i)
        openStreams -= 1
    }

    // MARK: - HTTP2SessionDelegate

    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult {
        if let i = slot(of: stream) {
            // Trailers on an open stream: allowed, counted like headers.
            streams[i].headerCount = 0
            return .ok
        }
        let i: Int
        if let free = freeStreamSlots.popLast() {
            i = free
        } else {
            streams.append(StreamState())
            i = streams.count - 1
        }
        streams[i].reset(id: stream, now: nowNanos)
        slotOfStream[stream] = i
        lastStream = (stream, i)
        openStreams += 1
        loop.metrics.streams.increment()
        return .ok
    }

    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let i = slot(of: stream) else { return .ok }
        streams[i].headerCount += 1
        streams[i].headerBytes += name.count + value.count + 32
        if streams[i].headerCount > loop.configuration.maxHeaderFields
            || streams[i].headerBytes > Int(loop.configuration.http2.maxHeaderListSize)
        {
            glitch()
            return .resetStream
        }
        guard streams[i].route == .pending else { return .ok }
        if equal(name, ":method") {
            streams[i].isPost = equal(value, "POST")
            streams[i].isGet = equal(value, "GET") || equal(value, "HEAD")
        } else if equal(name, ":path") {
            if equal(value, "/v1/entries") {
                streams[i].pathIsEntries = true
            } else {
                streams[i].path = String(decoding: value, as: UTF8.self)
            }
        } else if equal(name, "authorization") {
            if !streams[i].pathIsEntries {
                // An admin call's credentials (pseudo-headers come first, so the path is known).
                streams[i].authorization.append(contentsOf: value)
                return .ok
            }
            if !value.elementsEqual(lastAuthorization) {
                lastAuthorization = Array(value)
                lastClient = loop.admission.identify(authorization: value)
            }
            streams[i].client = lastClient
        } else if equal(name, "content-type") {
            // The exact spelling is checked first (no allocation); any other is parsed.
            streams[i].contentTypeOK = equal(value, "application/vnd.raffled.frames")
                || startsWith(value, "application/vnd.raffled.frames;")
                || isFramesContentType(String(decoding: value, as: UTF8.self))
        }
        return .ok
    }

    func headersComplete(stream: Int32, endStream: Bool) {
        guard let i = slot(of: stream) else { return }
        if streams[i].route == .pending {
            if streams[i].headerCount == 0 { glitch() }
            if streams[i].pathIsEntries && !admin.servesEntries {
                answerJSON(i, status: 404, AdminAPI.errorJSON("entries are not taken on the admin listener"))
                streams[i].route = .discard
            } else if streams[i].pathIsEntries {
                if !streams[i].isPost {
                    answerJSON(i, status: 405, AdminAPI.errorJSON("use POST for /v1/entries"))
                    streams[i].route = .discard
                } else if !streams[i].contentTypeOK {
                    streams[i].route = .discard
                    streams[i].addError(ProtocolError(code: .badContentType, message: "content-type must be \(Wire.contentType)"), loop: loop)
                    streams[i].finished = true
                    settle(i)
                } else {
                    streams[i].route = .entries
                }
            } else {
                streams[i].route = .admin
            }
        }
        if endStream { requestEnded(i) }
    }

    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let i = slot(of: stream) else { return .ok }
        switch streams[i].route {
        case .entries where !streams[i].fatal:
            ingest(i, bytes)
        case .admin:
            if streams[i].adminBody.count + bytes.count <= loop.configuration.maxAdminBodyBytes {
                streams[i].adminBody.append(contentsOf: bytes)
            } else {
                streams[i].adminBodyTooLarge = true
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
        let available = streams[i].replies.sendable
        if available > 0 {
            let n = min(available, buffer.count)
            streams[i].replies.out.withUnsafeReadableBytes { src in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[0..<n]))
            }
            streams[i].replies.out.moveReaderIndex(forwardBy: n)
            streams[i].replies.compactIfSent()
            if streams[i].isDrained { endOfBody = true }
            return n
        }
        if streams[i].isDrained {
            endOfBody = true
            return 0
        }
        streams[i].deferred = true
        return nil
    }

    func frameSent(stream: Int32, type: UInt8, endStream: Bool) {
        guard endStream, let i = slot(of: stream) else { return }
        // The response is complete. If the request body is still coming (a connection-level frame
        // error ended the stream early), reset it with NO_ERROR as PROTOCOL.md §11 says.
        if !streams[i].requestEnded { session?.resetStream(stream, errorCode: HTTP2Session.noError) }
    }

    func invalidFrame(stream: Int32, type: UInt8) {
        glitch()
    }

    func streamClosed(stream: Int32, errorCode: UInt32) {
        guard let i = slot(of: stream) else { return }
        if streams[i].waiting, let p = pendingSlots.firstIndex(of: i) { pendingSlots.remove(at: p) }
        releaseStream(i)
        if draining && openStreams == 0 { close() }  // deferred to the next flush when in a callback
    }

    // MARK: - Entry path

    /// Decodes and admits whole frames from `bytes` (the shared exchange logic), then hands the
    /// bytes back to flow control unless replies are piling up.
    private func ingest(_ i: Int, _ bytes: UnsafeRawBufferPointer) {
        let now = IngestContext(client: streams[i].client, nowNanos: nowNanos, wallMilliseconds: nowWallMilliseconds)
        streams[i].ingest(bytes, loop: loop, at: now, anonymous: &anonymousBucket)
        consume(i, bytes.count)
        settle(i)
    }

    /// Reopens the flow-control window unless replies are piling up waiting for the log.
    private func consume(_ i: Int, _ count: Int) {
        streams[i].unconsumed += count
        let pending = streams[i].replies.out.readableBytes
        if pending <= loop.configuration.maxPendingReplyBytesPerStream {
            session?.consume(stream: streams[i].id, count: streams[i].unconsumed)
            streams[i].unconsumed = 0
        }
    }

    private func requestEnded(_ i: Int) {
        guard !streams[i].requestEnded else { return }
        streams[i].requestEnded = true
        switch streams[i].route {
        case .entries:
            streams[i].entriesBodyEnded(loop)
        case .admin:
            if streams[i].adminBodyTooLarge {
                streams[i].answer(AdminResponse(status: 413, json: AdminAPI.errorJSON("request body over \(loop.configuration.maxAdminBodyBytes) bytes")))
            } else {
                let answer = admin.handle(
                    get: streams[i].isGet, post: streams[i].isPost, path: streams[i].path, body: streams[i].adminBody,
                    authorization: streams[i].authorization)
                switch answer {
                case .now(let response):
                    streams[i].answer(response)
                case .later(let work):
                    // The stream stays open, unfinished, until the ledger has answered.
                    let id = streams[i].id
                    let connection = NIOLoopBound(self, eventLoop: loop.eventLoop)
                    loop.eventLoop.makeFutureWithTask(work).whenSuccess { connection.value.adminAnswered(stream: id, $0) }
                    return
                }
            }
        case .pending, .discard:
            break
        }
        streams[i].finished = true
        settle(i)
    }

    /// A ledger-backed admin answer arrived (on the loop): send it unless the stream is gone.
    private func adminAnswered(stream id: Int32, _ response: AdminResponse) {
        guard session != nil, let i = slot(of: id), streams[i].active, !streams[i].finished else { return }
        streams[i].answer(response)
        streams[i].finished = true
        settle(i)
        flushOutput()
    }

    private func answerJSON(_ i: Int, status: Int, _ body: [UInt8]) {
        streams[i].answer(AdminResponse(status: status, json: body))
        streams[i].finished = true
        settle(i)
    }

    // MARK: - Durability

    /// Releases what is durable on stream `i`; registers to be woken if something is not yet.
    private func settle(_ i: Int) {
        release(i)
        if streams[i].hasUnreleased && !streams[i].waiting {
            streams[i].waiting = true
            pendingSlots.append(i)
            loop.wait(self)
        }
    }

    private func release(_ i: Int) {
        let progressed = streams[i].advance(loop) { inSession ? nowNanos : monotonicNanoseconds() }
        if (progressed || streams[i].isDrained) {
            if !streams[i].headersSubmitted {
                submitHeaders(i)
            } else if streams[i].deferred {
                streams[i].deferred = false
                session?.resumeData(stream: streams[i].id)
            }
        }
        if progressed && streams[i].unconsumed > 0 {
            consume(i, 0)
        }
    }

    private func submitHeaders(_ i: Int) {
        guard let session else { return }
        headers.removeAll()
        headers.add(":status", integer: streams[i].status)
        headers.add("content-type", streams[i].bodyKind.contentType)
        streams[i].extraResponseFields(durability: loop.ledger.durability) { headers.add($0, $1) }
        do {
            try session.submitResponse(stream: streams[i].id, headers: headers, hasBody: true)
            streams[i].headersSubmitted = true
        } catch {
            logger.debug("cannot submit a response on stream \(streams[i].id): \(error)")
        }
    }

    /// Called by the loop after the log committed: release what became durable, then one write.
    func durabilityAdvanced() {
        guard session != nil else { return }
        var still: [Int] = []
        for i in pendingSlots where streams[i].active {
            release(i)
            if streams[i].hasUnreleased { still.append(i) } else { streams[i].waiting = false }
        }
        pendingSlots = still
        if !still.isEmpty { loop.wait(self) }
        flushOutput()
    }
}

@inline(__always)
private func equal(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    guard bytes.count == literal.utf8CodeUnitCount, let base = bytes.baseAddress else { return bytes.isEmpty && literal.utf8CodeUnitCount == 0 }
    return memcmp(base, literal.utf8Start, bytes.count) == 0
}

@inline(__always)
private func startsWith(_ bytes: UnsafeRawBufferPointer, _ literal: StaticString) -> Bool {
    guard bytes.count >= literal.utf8CodeUnitCount, let base = bytes.baseAddress else { return false }
    return memcmp(base, literal.utf8Start, literal.utf8CodeUnitCount) == 0
}

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
