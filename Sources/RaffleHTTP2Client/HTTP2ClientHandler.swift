import NIOConcurrencyHelpers
import NIOCore
import RaffleHTTP2

/// A request waiting for the event loop: queued by any thread, started on the loop in batches (see
/// `RequestQueue`).
struct PendingRequest: Sendable {
    var head: HTTP2RequestHead
    var body: [UInt8]?
    /// When to give up waiting for the response (nil: never).
    var deadline: NIODeadline?
    var reply: ReplyWaiter
}

/// Who waits for a response, and in which shape.
enum ReplyWaiter: Sendable {
    /// The whole response, header fields included (`HTTP2Client.request`).
    case response(UnsafeContinuation<HTTP2Response, any Error>)
    /// Status and body only (`HTTP2Client.exchange`, the entry path): no header strings are built.
    case bytes(UnsafeContinuation<HTTP2Reply, any Error>)
    /// The whole response, as a future (tests that drive the handler on an `EmbeddedChannel`).
    case promise(EventLoopPromise<HTTP2Response>)

    func fail(_ error: HTTP2ClientError) {
        switch self {
        case .response(let c): c.resume(throwing: error)
        case .bytes(let c): c.resume(throwing: error)
        case .promise(let p): p.fail(error)
        }
    }
}

/// Requests handed from callers' threads to the connection's event loop.
///
/// Measured (FIELD-NOTES, issue #15): one `loop.execute` and one socket write per request made
/// the client's cost per call several times the server's. Callers append here under a lock; only
/// the caller that finds the queue idle schedules a drain, and the drain starts every queued
/// request and writes them to the socket at once — one wake-up and one write per batch.
final class RequestQueue: Sendable {
    /// The requests queued, whether a drain is scheduled, and the array the last drain gave back
    /// (emptied, its capacity kept): `recycle` and `take` swap it in, so a burst of requests does
    /// not grow a fresh array from nothing each time (measured: ~1 malloc per request, issue #15).
    private let state = NIOLockedValueBox<(items: [PendingRequest], scheduled: Bool, spare: [PendingRequest])>(([], false, []))

    /// Appends `request`; true if the caller must schedule a drain (none was pending).
    func append(_ request: PendingRequest) -> Bool {
        state.withLockedValue { s in
            s.items.append(request)
            if s.scheduled { return false }
            s.scheduled = true
            return true
        }
    }

    /// Takes everything queued; the next `append` schedules a drain again. Hand the array back
    /// with `recycle` once its requests are started.
    func take() -> [PendingRequest] {
        state.withLockedValue { s in
            s.scheduled = false
            var taken: [PendingRequest] = []
            swap(&taken, &s.spare)
            swap(&taken, &s.items)
            return taken
        }
    }

    /// Gives back a batch `take` returned, for its storage (kept up to 1,024 slots).
    func recycle(_ batch: consuming [PendingRequest]) {
        var batch = batch
        guard batch.capacity <= 1_024 else { return }
        batch.removeAll(keepingCapacity: true)
        state.withLockedValue { s in
            // Into the queue itself when nothing came meanwhile, else kept for the next `take`.
            if s.items.isEmpty && s.items.capacity < batch.capacity {
                swap(&s.items, &batch)
            } else if s.spare.capacity < batch.capacity {
                swap(&s.spare, &batch)
            }
        }
    }
}

/// The client's channel handler: drives an nghttp2 client session.
final class HTTP2ClientHandler: ChannelInboundHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    /// One request in flight. A class: the handler's callbacks update it in place, where a struct in
    /// the dictionary was copied (with every array in it retained) on each lookup — a measured cost.
    private final class Exchange {
        var status = 0
        /// Response header fields: only collected for `.response` and `.promise` waiters.
        var headers: [(name: String, value: String)] = []
        var collectsHeaders = false
        var body: [UInt8] = []
        var request: [UInt8]
        var sent = 0
        var requestEnded: Bool
        var reply: ReplyWaiter?
        var deadline: NIODeadline?
        var chunks: AsyncStream<ByteBuffer>.Continuation?
        var statusWaiters: [EventLoopPromise<Int>] = []
        var deferred = false

        init(request: [UInt8] = [], requestEnded: Bool = false, reply: ReplyWaiter? = nil, deadline: NIODeadline? = nil,
             chunks: AsyncStream<ByteBuffer>.Continuation? = nil) {
            self.request = request
            self.requestEnded = requestEnded
            self.reply = reply
            self.deadline = deadline
            self.chunks = chunks
        }
    }

    /// How often the deadlines of requests in flight are checked: one timer per connection rather
    /// than one per request (a scheduled task per request was a measured cost: heap pushes, and a
    /// linear search of the timer heap on every cancel). A request times out between its deadline
    /// and one period later.
    static let deadlineSweep = TimeAmount.milliseconds(25)

    private var session: HTTP2Session?
    private var context: ChannelHandlerContext?
    private var exchanges: [Int32: Exchange] = [:]
    /// Streams with a deadline, in the order they were started. Requests on one connection mostly
    /// share one timeout, so this is also deadline order and the sweep looks only at its front:
    /// entries of finished streams are dropped there, expired ones failed. A deadline earlier than
    /// the last one queued goes to `outOfOrder` instead, which the sweep scans whole.
    private var deadlines = CircularBuffer<(id: Int32, deadline: NIODeadline)>()
    private var outOfOrder: [(id: Int32, deadline: NIODeadline)] = []
    private var sweep: RepeatedTask?
    /// Statuses of recently closed streams, so `status()` can still answer after a quick reset.
    private var closedStatuses: [Int32: Int] = [:]
    /// Exchanges of finished requests, emptied, for the next ones (at most `spareLimit`): one
    /// object per request was a malloc per call (issue #15).
    private var spare: [Exchange] = []
    static let spareLimit = 256
    /// Spare exchanges kept (for tests).
    var spareExchangeCount: Int { spare.count }
    private var failure: HTTP2ClientError?

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        do {
            var options = HTTP2Session.Options()
            options.manualFlowControl = false
            let session = try HTTP2Session(role: .client, delegate: self, options: options)
            var settings = HTTP2Session.Settings()
            settings.initialWindowSize = 16 << 20
            try session.submitSettings(settings)
            self.session = session
        } catch {
            failure = HTTP2ClientError("cannot start HTTP/2 session: \(error)")
        }
    }

    /// Starts the deadline sweep if it is not running (it runs only while requests with a deadline
    /// are in flight: an idle connection is never woken for it).
    private func startSweep() {
        guard sweep == nil, let loop = context?.eventLoop else { return }
        let this = NIOLoopBound(self, eventLoop: loop)
        sweep = loop.scheduleRepeatedTask(initialDelay: Self.deadlineSweep, delay: Self.deadlineSweep) { _ in
            this.value.expire(now: .now())
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        flush()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(HTTP2ClientError("connection closed"))
        session?.close()
        session = nil
        context.fireChannelInactive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        sweep?.cancel()
        sweep = nil
        session?.close()
        session = nil
        self.context = nil
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(HTTP2ClientError("connection error: \(error)"))
        context.close(promise: nil)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let session else { return }
        let ok: Bool = buffer.withUnsafeReadableBytes { bytes in (try? session.receive(bytes)) != nil }
        if !ok {
            failAll(HTTP2ClientError("HTTP/2 protocol error from server"))
            context.close(promise: nil)
            return
        }
        flush()
    }

    private func failAll(_ error: HTTP2ClientError) {
        failure = error
        for (_, e) in exchanges {
            e.reply?.fail(error)
            e.chunks?.finish()
            for w in e.statusWaiters { w.fail(error) }
        }
        exchanges.removeAll()
        deadlines.removeAll()
        outOfOrder.removeAll()
        sweep?.cancel()
        sweep = nil
    }

    private func flush() {
        guard let context, let session else { return }
        var out = context.channel.allocator.buffer(capacity: 0)
        do { try session.drainOutput(into: &out) } catch {
            failAll(HTTP2ClientError("HTTP/2 send failed: \(error)"))
            context.close(promise: nil)
            return
        }
        if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
    }

    private func submit(_ head: HTTP2RequestHead, hasBody: Bool) throws -> Int32 {
        guard let session else { throw failure ?? HTTP2ClientError("not connected") }
        return try session.submitRequest(headers: head.block, hasBody: hasBody)
    }

    /// Starts every queued request, then writes them all with one flush.
    func start(_ batch: [PendingRequest]) {
        for p in batch {
            do {
                let id = try submit(p.head, hasBody: p.body != nil)
                let e = makeExchange(request: p.body ?? [], reply: p.reply, deadline: p.deadline)
                switch p.reply {
                case .response, .promise: e.collectsHeaders = true
                case .bytes: break
                }
                if let d = p.deadline {
                    if let last = deadlines.last, d < last.deadline { outOfOrder.append((id, d)) } else { deadlines.append((id, d)) }
                    startSweep()
                }
                exchanges[id] = e
            } catch let error as HTTP2ClientError {
                p.reply.fail(error)
            } catch {
                p.reply.fail(HTTP2ClientError("cannot start request: \(error)"))
            }
        }
        flush()
    }

    /// An exchange for a whole-body request: a spare one if there is one.
    private func makeExchange(request: [UInt8], reply: ReplyWaiter, deadline: NIODeadline?) -> Exchange {
        guard let e = spare.popLast() else { return Exchange(request: request, requestEnded: true, reply: reply, deadline: deadline) }
        e.request = request
        e.requestEnded = true
        e.reply = reply
        e.deadline = deadline
        return e
    }

    /// Empties a finished whole-body exchange and keeps it for `makeExchange`. Only exchanges that
    /// nothing else refers to any more: removed from `exchanges`, their reply already resumed.
    private func recycle(_ e: Exchange) {
        guard spare.count < Self.spareLimit, e.chunks == nil, e.statusWaiters.isEmpty else { return }
        e.status = 0
        e.headers = []
        e.collectsHeaders = false
        e.body = []
        e.request = []
        e.sent = 0
        e.reply = nil
        e.deadline = nil
        e.deferred = false
        spare.append(e)
    }

    /// Starts one request answered through `promise` (for tests driving the handler directly).
    func start(method: String, path: String, headers: [(String, String)], body: [UInt8]?, promise: EventLoopPromise<HTTP2Response>) {
        start([PendingRequest(head: HTTP2RequestHead(method: method, path: path, headers: headers), body: body, deadline: nil, reply: .promise(promise))])
    }

    /// Fails the requests whose deadline has passed and resets their streams (CANCEL), so the
    /// server stops working on them.
    func expire(now: NIODeadline) {
        var failed = false
        while let front = deadlines.first {
            guard let e = exchanges[front.id], e.deadline == front.deadline else {
                deadlines.removeFirst()  // finished (or its id reused after a reconnect): nothing to do
                continue
            }
            guard front.deadline <= now else { break }
            deadlines.removeFirst()
            fail(stream: front.id, e)
            failed = true
        }
        if !outOfOrder.isEmpty {
            outOfOrder.removeAll { entry in
                guard let e = exchanges[entry.id], e.deadline == entry.deadline else { return true }
                guard entry.deadline <= now else { return false }
                fail(stream: entry.id, e)
                failed = true
                return true
            }
        }
        if deadlines.isEmpty && outOfOrder.isEmpty {
            sweep?.cancel()
            sweep = nil
        }
        if failed { flush() }
    }

    private func fail(stream: Int32, _ e: Exchange) {
        exchanges.removeValue(forKey: stream)
        e.reply?.fail(HTTP2ClientError("no response within the timeout"))
        session?.resetStream(stream, errorCode: Self.cancel)
    }

    /// HTTP/2 CANCEL (RFC 9113 §7).
    static let cancel: UInt32 = 0x8

    func startStreaming(
        method: String, path: String, headers: [(String, String)], chunks: AsyncStream<ByteBuffer>.Continuation, promise: EventLoopPromise<Int32>
    ) {
        do {
            let id = try submit(HTTP2RequestHead(method: method, path: path, headers: headers), hasBody: true)
            exchanges[id] = Exchange(chunks: chunks)
            flush()
            promise.succeed(id)
        } catch {
            chunks.finish()
            promise.fail(error)
        }
    }

    func write(stream: Int32, bytes: [UInt8], end: Bool) {
        guard let e = exchanges[stream] else { return }
        e.request.append(contentsOf: bytes)
        if end { e.requestEnded = true }
        if e.deferred {
            e.deferred = false
            session?.resumeData(stream: stream)
        }
        flush()
    }

    func whenStatus(stream: Int32, promise: EventLoopPromise<Int>) {
        guard let e = exchanges[stream] else {
            if let status = closedStatuses[stream] { promise.succeed(status) } else {
                promise.fail(failure ?? HTTP2ClientError("stream \(stream) is closed"))
            }
            return
        }
        if e.status != 0 { promise.succeed(e.status) } else { e.statusWaiters.append(promise) }
    }

    // MARK: HTTP2SessionDelegate

    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult { .ok }

    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let e = exchanges[stream] else { return .ok }
        if name.elementsEqual(":status".utf8) {
            var status = 0
            for digit in value {
                guard digit >= 0x30 && digit <= 0x39, status < 1000 else { return .ok }
                status = status * 10 + Int(digit - 0x30)
            }
            e.status = status
        } else if e.collectsHeaders {
            e.headers.append((String(decoding: name, as: UTF8.self), String(decoding: value, as: UTF8.self)))
        }
        return .ok
    }

    func headersComplete(stream: Int32, endStream: Bool) {
        guard let e = exchanges[stream], e.status != 0, !e.statusWaiters.isEmpty else { return }
        for w in e.statusWaiters { w.succeed(e.status) }
        e.statusWaiters.removeAll()
    }

    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        guard let e = exchanges[stream] else { return .ok }
        if let chunks = e.chunks {
            var b = ByteBuffer()
            b.writeBytes(bytes)
            chunks.yield(b)
        } else {
            e.body.append(contentsOf: bytes)
        }
        return .ok
    }

    func dataFrameComplete(stream: Int32, length: Int, endStream: Bool) {}

    func readBody(stream: Int32, into buffer: UnsafeMutableRawBufferPointer, endOfBody: inout Bool) -> Int? {
        guard let e = exchanges[stream] else {
            endOfBody = true
            return 0
        }
        let available = e.request.count - e.sent
        if available == 0 {
            if e.requestEnded {
                endOfBody = true
                return 0
            }
            e.deferred = true
            return nil
        }
        let n = min(available, buffer.count)
        e.request.withUnsafeBytes { src in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[e.sent..<(e.sent + n)])) }
        e.sent += n
        if e.sent == e.request.count {
            if e.requestEnded {
                endOfBody = true
            } else {
                // A long-lived stream: everything written so far is sent; start the buffer over so it
                // holds only unsent bytes (bounded by what the caller has in flight).
                e.request.removeAll(keepingCapacity: true)
                e.sent = 0
            }
        }
        return n
    }

    func frameSent(stream: Int32, type: UInt8, endStream: Bool) {}

    func invalidFrame(stream: Int32, type: UInt8) {}

    func streamClosed(stream: Int32, errorCode: UInt32) {
        guard let e = exchanges.removeValue(forKey: stream) else { return }
        if e.chunks != nil && e.status != 0 {
            if closedStatuses.count >= 64 { closedStatuses.removeAll(keepingCapacity: true) }
            closedStatuses[stream] = e.status
        }
        switch e.reply {
        case .response(let c)?:
            c.resume(returning: HTTP2Response(status: e.status, headers: e.headers, body: ByteBuffer(bytes: e.body), resetCode: errorCode))
        case .promise(let p)?:
            p.succeed(HTTP2Response(status: e.status, headers: e.headers, body: ByteBuffer(bytes: e.body), resetCode: errorCode))
        case .bytes(let c)?:
            let reply = HTTP2Reply(status: e.status, body: e.body, resetCode: errorCode)
            e.body = []  // the reply's array is then the only reference to its storage
            c.resume(returning: reply)
        case nil:
            break
        }
        e.chunks?.finish()
        for w in e.statusWaiters {
            if e.status != 0 { w.succeed(e.status) } else { w.fail(HTTP2ClientError("stream reset with code \(errorCode)")) }
        }
        recycle(e)
    }
}
