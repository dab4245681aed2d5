import NIOCore
import RaffleHTTP2

/// The client's channel handler: drives an nghttp2 client session.
final class HTTP2ClientHandler: ChannelInboundHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Exchange {
        var status = 0
        var headers: [(name: String, value: String)] = []
        var body = ByteBuffer()
        var request: [UInt8] = []
        var sent = 0
        var requestEnded = false
        var promise: EventLoopPromise<HTTP2Response>?
        var chunks: AsyncStream<ByteBuffer>.Continuation?
        var statusWaiters: [EventLoopPromise<Int>] = []
        var deferred = false
    }

    private var session: HTTP2Session?
    private var context: ChannelHandlerContext?
    private var exchanges: [Int32: Exchange] = [:]
    /// Statuses of recently closed streams, so `status()` can still answer after a quick reset.
    private var closedStatuses: [Int32: Int] = [:]
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
            e.promise?.fail(error)
            e.chunks?.finish()
            for w in e.statusWaiters { w.fail(error) }
        }
        exchanges.removeAll()
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

    private func submit(method: String, path: String, headers extra: [(String, String)], hasBody: Bool) throws -> Int32 {
        guard let session else { throw failure ?? HTTP2ClientError("not connected") }
        var block = HeaderBlock()
        block.add(":method", method)
        block.add(":path", path)
        block.add(":scheme", "http")
        block.add(":authority", "raffled")
        for (name, value) in extra { block.addDynamic(name.lowercased(), value) }
        return try session.submitRequest(headers: block, hasBody: hasBody)
    }

    func start(method: String, path: String, headers: [(String, String)], body: [UInt8]?, promise: EventLoopPromise<HTTP2Response>) {
        do {
            let id = try submit(method: method, path: path, headers: headers, hasBody: body != nil)
            exchanges[id] = Exchange(request: body ?? [], requestEnded: true, promise: promise)
            flush()
        } catch {
            promise.fail(error)
        }
    }

    func startStreaming(
        method: String, path: String, headers: [(String, String)], chunks: AsyncStream<ByteBuffer>.Continuation, promise: EventLoopPromise<Int32>
    ) {
        do {
            let id = try submit(method: method, path: path, headers: headers, hasBody: true)
            exchanges[id] = Exchange(chunks: chunks)
            flush()
            promise.succeed(id)
        } catch {
            chunks.finish()
            promise.fail(error)
        }
    }

    func write(stream: Int32, bytes: [UInt8], end: Bool) {
        guard exchanges[stream] != nil else { return }
        exchanges[stream]?.request.append(contentsOf: bytes)
        if end { exchanges[stream]?.requestEnded = true }
        if exchanges[stream]?.deferred == true {
            exchanges[stream]?.deferred = false
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
        if e.status != 0 { promise.succeed(e.status) } else { exchanges[stream]?.statusWaiters.append(promise) }
    }

    // MARK: HTTP2SessionDelegate

    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult { .ok }

    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        let n = String(decoding: name, as: UTF8.self)
        let v = String(decoding: value, as: UTF8.self)
        if n == ":status" {
            exchanges[stream]?.status = Int(v) ?? 0
        } else {
            exchanges[stream]?.headers.append((n, v))
        }
        return .ok
    }

    func headersComplete(stream: Int32, endStream: Bool) {
        guard let e = exchanges[stream], e.status != 0, !e.statusWaiters.isEmpty else { return }
        for w in e.statusWaiters { w.succeed(e.status) }
        exchanges[stream]?.statusWaiters.removeAll()
    }

    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        if let chunks = exchanges[stream]?.chunks {
            var b = ByteBuffer()
            b.writeBytes(bytes)
            chunks.yield(b)
        } else {
            exchanges[stream]?.body.writeBytes(bytes)
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
            exchanges[stream]?.deferred = true
            return nil
        }
        let n = min(available, buffer.count)
        e.request.withUnsafeBytes { src in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[e.sent..<(e.sent + n)])) }
        exchanges[stream]?.sent += n
        if e.sent + n == e.request.count {
            if e.requestEnded {
                endOfBody = true
            } else {
                // A long-lived stream: everything written so far is sent; start the buffer over so it
                // holds only unsent bytes (bounded by what the caller has in flight).
                exchanges[stream]?.request.removeAll(keepingCapacity: true)
                exchanges[stream]?.sent = 0
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
        e.promise?.succeed(HTTP2Response(status: e.status, headers: e.headers, body: e.body, resetCode: errorCode))
        e.chunks?.finish()
        for w in e.statusWaiters {
            if e.status != 0 { w.succeed(e.status) } else { w.fail(HTTP2ClientError("stream reset with code \(errorCode)")) }
        }
    }
}
