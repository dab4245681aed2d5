import Foundation
import Logging
import NIOCore
import NIOHTTP1
import RaffleAdmission
import RaffleWire

/// Marks when bytes arrive, in front of the HTTP/1.1 decoder: the decoder shows nothing of a
/// request head until it is whole, and a client dribbling one (slowloris) must still be cut off.
final class ReadActivity: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// When the last bytes arrived (monotonic nanoseconds).
    private(set) var lastReadNanos = monotonicNanoseconds()
    /// When the first byte of a request head that has not arrived whole came (nil: none pending).
    var headStartedNanos: UInt64?
    /// Between requests: the next bytes start a head.
    var awaitingHead = true

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        lastReadNanos = monotonicNanoseconds()
        if awaitingHead && headStartedNanos == nil { headStartedNanos = lastReadNanos }
        context.fireChannelRead(data)
    }
}

/// One HTTP/1.1 connection on the main port (or the admin listener): requests decoded by NIOHTTP1
/// (with its pipelining and protocol-error handlers in front), served one at a time in order.
///
/// `POST /v1/entries` runs the same exchange as an HTTP/2 stream (`StreamState`, `Exchange.swift`):
/// body chunks are decoded in place and admitted as they arrive, the status follows the first
/// reply (PROTOCOL.md §11), and replies leave as the log makes them durable — with a
/// `content-length` when the whole answer is ready at once, chunked otherwise (a bulk partner may
/// stream batch after batch in one request). Every other path is the JSON admin and read API.
///
/// Limits: header size and count (the decoder's limits: 400 and close), `maxAdminBodyBytes` for
/// JSON bodies, `requestHeadTimeoutMilliseconds` for a head to arrive whole once begun, the idle
/// timeout between requests and within a body, and reading pauses while replies wait for the log
/// past `maxPendingReplyBytesPerStream` or unsent bytes pass `maxUnsentBytesPerConnection`.
final class HTTP1ServerConnection: ChannelInboundHandler, LoopConnection {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let loop: LoopContext
    private let admin: AdminAPI
    private let logger: Logger
    private let activity: ReadActivity
    private var context: ChannelHandlerContext?
    /// The request being answered (requests are served one at a time).
    private var exchange = StreamState()
    /// A response has begun and not yet ended.
    private var inRequest = false
    private var keepAlive = true
    private var anonymous: LocalGCRA
    /// The last `authorization` on this connection and whom it named (compared once, not per request).
    private var lastAuthorization: [UInt8] = []
    private var lastClient: Int?
    private var waiting = false
    /// Replies were ready while the request body was still arriving in this read: the head waits
    /// for the end of the read, so a request whose end is in the same read gets a content-length.
    private var headDeferred = false
    private var readPaused = false
    private var lifetime = ConnectionLifetime()
    private var closed: Bool { lifetime.ended }
    private var draining = false

    init(loop: LoopContext, admin: AdminAPI, activity: ReadActivity, logger: Logger) {
        self.loop = loop
        self.admin = admin
        self.activity = activity
        self.logger = logger
        anonymous = LocalGCRA(loop.configuration.admission.anonymous)
    }

    /// Adds the HTTP/1.1 handlers at the end of `pipeline`: byte activity, NIOHTTP1's encoder,
    /// decoder (with our header limits), pipelining and protocol-error handlers, then this one.
    static func install(on pipeline: ChannelPipeline.SynchronousOperations, loop: LoopContext, admin: AdminAPI, logger: Logger) throws {
        let activity = ReadActivity()
        try pipeline.addHandler(activity)
        var limits = NIOHTTPDecoderLimitConfiguration()
        limits.maxHeaderListSize = Int(loop.configuration.http2.maxHeaderListSize)
        limits.maxHeaderFieldSize = Int(loop.configuration.http2.maxHeaderListSize)
        limits.maxHeaderFieldCount = loop.configuration.maxHeaderFields
        try pipeline.configureHTTPServerPipeline(
            withPipeliningAssistance: true, withErrorHandling: true, withEncoderConfiguration: .init(), withDecoderLimitConfiguration: limits)
        try pipeline.addHandler(HTTP1ServerConnection(loop: loop, admin: admin, activity: activity, logger: logger))
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let configuration = loop.configuration
        let check = TimeAmount.milliseconds(max(min(configuration.idleTimeoutMilliseconds, configuration.requestHeadTimeoutMilliseconds) / 4, 10))
        lifetime.begin(self, loop: loop, on: context.eventLoop, every: check) { $0.checkTimeouts() }
        if loop.shuttingDown { draining = true }
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
        guard lifetime.end(self, loop: loop) else { return }
        exchange.partial.drop(loop)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // Parser errors were answered 400 by HTTPServerProtocolErrorHandler; the decoder closes.
        logger.debug("HTTP/1.1 connection error: \(error)")
        context.close(promise: nil)
    }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        resumeReadingIfDrained()
        context.fireChannelWritabilityChanged()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            begin(head)
        case .body(let buffer):
            body(buffer)
        case .end:
            activity.headStartedNanos = nil
            guard !exchange.requestEnded else { return }
            exchange.requestEnded = true
            switch exchange.route {
            case .entries:
                exchange.entriesBodyEnded(loop)
            case .admin:
                if exchange.adminBodyTooLarge {
                    exchange.answer(AdminResponse(status: 413, json: AdminAPI.errorJSON("request body over \(loop.configuration.maxAdminBodyBytes) bytes")))
                } else {
                    let answer = admin.handle(
                        get: exchange.isGet, post: exchange.isPost, path: exchange.path, body: exchange.adminBody,
                        authorization: exchange.authorization)
                    switch answer {
                    case .now(let response):
                        exchange.answer(response)
                    case .later(let work):
                        // The next pipelined request waits (NIO's pipelining handler) until this one ends.
                        let connection = NIOLoopBound(self, eventLoop: loop.eventLoop)
                        loop.eventLoop.makeFutureWithTask(work).whenSuccess { connection.value.adminAnswered($0) }
                        return
                    }
                }
            case .pending, .discard:
                break
            }
            exchange.finished = true
        }
        settle(inRead: true)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if headDeferred {
            headDeferred = false
            settle()
        }
        context.flush()
        context.fireChannelReadComplete()
    }

    // MARK: - Requests

    private func begin(_ head: HTTPRequestHead) {
        let now = monotonicNanoseconds()
        activity.awaitingHead = false
        activity.headStartedNanos = nil
        inRequest = true
        exchange.reset(id: 1, now: now)
        keepAlive = head.isKeepAlive && !draining
        exchange.isPost = head.method == .POST
        exchange.isGet = head.method == .GET || head.method == .HEAD
        let authorization = head.headers.first(name: "authorization")
        if head.uri == Wire.entriesPath {
            exchange.pathIsEntries = true
            if !admin.servesEntries {
                answerNow(AdminResponse(status: 404, json: AdminAPI.errorJSON("entries are not taken on the admin listener")))
            } else if !exchange.isPost {
                answerNow(AdminResponse(status: 405, json: AdminAPI.errorJSON("use POST for /v1/entries")))
            } else if !isFramesContentType(head.headers.first(name: "content-type")) {
                exchange.route = .discard
                exchange.addError(ProtocolError(code: .badContentType, message: "content-type must be \(Wire.contentType)"), loop: loop)
                exchange.finished = true
            } else {
                exchange.route = .entries
                if let authorization {
                    if !authorization.utf8.elementsEqual(lastAuthorization) {
                        lastAuthorization = Array(authorization.utf8)
                        lastClient = lastAuthorization.withUnsafeBytes { loop.admission.identify(authorization: $0) }
                    }
                    exchange.client = lastClient
                }
            }
        } else {
            exchange.route = .admin
            exchange.path = head.uri
            if let authorization { exchange.authorization.append(contentsOf: authorization.utf8) }
        }
        if exchange.route != .discard && exchange.route != .pending, head.headers.first(name: "expect")?.lowercased() == "100-continue" {
            context?.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
        }
    }

    /// A ledger-backed admin answer arrived (on the loop) for the current request.
    private func adminAnswered(_ response: AdminResponse) {
        guard !closed, inRequest, exchange.route == .admin, !exchange.finished else { return }
        exchange.answer(response)
        exchange.finished = true
        settle()
    }

    private func answerNow(_ response: AdminResponse) {
        exchange.route = .discard
        exchange.answer(response)
        exchange.finished = true
    }

    private func body(_ buffer: ByteBuffer) {
        switch exchange.route {
        case .entries:
            let now = IngestContext(client: exchange.client, nowNanos: activity.lastReadNanos, wallMilliseconds: wallClockMilliseconds(), transport: .http1)
            buffer.withUnsafeReadableBytes { bytes in
                exchange.ingest(bytes, loop: loop, at: now, anonymous: &anonymous)
            }
            // Backpressure: stop reading while replies pile up waiting for the log.
            if exchange.replies.out.readableBytes > loop.configuration.maxPendingReplyBytesPerStream { pauseReading() }
        case .admin:
            if exchange.adminBody.count + buffer.readableBytes <= loop.configuration.maxAdminBodyBytes {
                exchange.adminBody.append(contentsOf: buffer.readableBytesView)
            } else {
                exchange.adminBodyTooLarge = true
            }
        case .pending, .discard:
            break
        }
    }

    // MARK: - Responses

    /// Sends what is durable of the current response; ends it when everything is sent. Within a
    /// read (`inRead`), a head is not sent before the request has ended: the rest of the request
    /// is most likely in the same read (then the answer is sent whole, with a content-length), and
    /// `channelReadComplete` sends it otherwise (a body streaming in: chunked).
    private func settle(inRead: Bool = false) {
        guard let context, inRequest, !closed else { return }
        _ = exchange.advance(loop) { monotonicNanoseconds() }
        if !exchange.headersSubmitted && (exchange.replies.sendable > 0 || exchange.isDrained) {
            if inRead && !exchange.requestEnded {
                headDeferred = true
                return
            }
            writeHead(context)
        }
        if exchange.headersSubmitted {
            let n = exchange.replies.sendable
            if n > 0, let slice = exchange.replies.out.readSlice(length: n) {
                context.write(wrapOutboundOut(.body(.byteBuffer(slice))), promise: nil)
            }
            exchange.replies.compact()
        }
        if exchange.headersSubmitted && exchange.isDrained {
            headDeferred = false
            responseEnded(context)
        } else if exchange.hasUnreleased && !waiting {
            waiting = true
            loop.wait(self)
        }
        // Within a read, channelReadComplete flushes: pipelined answers leave in one write.
        if !inRead { context.flush() }
        // Bound unsent bytes: past the channel's high-water mark (maxUnsentBytesPerConnection) stop
        // reading until the socket drains (channelWritabilityChanged resumes).
        if !context.channel.isWritable { pauseReading() } else { resumeReadingIfDrained() }
    }

    private func writeHead(_ context: ChannelHandlerContext) {
        var headers = HTTPHeaders()
        exchange.responseFields(durability: loop.ledger.durability) { headers.add(name: "\($0)", value: $1) }
        if exchange.finished && !exchange.hasUnreleased {
            headers.add(name: "content-length", value: String(exchange.replies.sendable))
        }
        if !keepAlive { headers.add(name: "connection", value: "close") }
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: .http1_1, status: .init(statusCode: exchange.status), headers: headers))), promise: nil)
        exchange.headersSubmitted = true
    }

    private func responseEnded(_ context: ChannelHandlerContext) {
        inRequest = false
        waiting = false
        loop.stopWaiting(self)
        exchange.partial.drop(loop)
        activity.awaitingHead = true
        if keepAlive {
            context.write(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            let channel = context.channel
            context.writeAndFlush(wrapOutboundOut(.end(nil))).whenComplete { _ in channel.close(promise: nil) }
        }
    }

    private func pauseReading() {
        guard !readPaused, let context else { return }
        readPaused = true
        context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
    }

    private func resumeReadingIfDrained() {
        guard readPaused, let context, context.channel.isWritable,
            exchange.replies.out.readableBytes <= loop.configuration.maxPendingReplyBytesPerStream
        else { return }
        readPaused = false
        context.channel.setOption(.autoRead, value: true).whenFailure { _ in }
    }

    // MARK: - LoopConnection

    func durabilityAdvanced() {
        waiting = false
        settle()
    }

    func beginShutdown() {
        draining = true
        keepAlive = false
        // Between requests: close now. Within one: after its response (which says connection: close
        // unless its head has gone already; then the close itself tells the client).
        if !inRequest { context?.close(promise: nil) }
    }

    // MARK: - Timeouts

    private func checkTimeouts() {
        guard let context, !closed else { return }
        let now = monotonicNanoseconds()
        let idle = UInt64(max(loop.configuration.idleTimeoutMilliseconds, 0)) * 1_000_000
        let headLimit = UInt64(max(loop.configuration.requestHeadTimeoutMilliseconds, 0)) * 1_000_000
        if let started = activity.headStartedNanos, now &- started > headLimit {
            logger.info("closing an HTTP/1.1 connection: request head not complete in time (slowloris)")
            context.close(promise: nil)
        } else if !inRequest && activity.headStartedNanos == nil && now &- activity.lastReadNanos > idle {
            logger.debug("closing an idle HTTP/1.1 connection")
            context.close(promise: nil)
        } else if inRequest && !exchange.requestEnded && !readPaused && now &- activity.lastReadNanos > idle {
            logger.info("closing an HTTP/1.1 connection: request body stalled past the idle timeout")
            context.close(promise: nil)
        }
    }
}
