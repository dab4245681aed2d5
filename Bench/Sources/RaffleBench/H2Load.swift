import NIOCore
import NIOPosix
import RaffleHTTP2
import RaffleWire
import Synchronization

/// What one closed-loop HTTP/2 load run sends.
struct H2LoadPlan: Sendable {
    enum Request: Sendable {
        /// `GET path` (calibration against h2o / h2load).
        case get(path: String)
        /// `POST /v1/entries` with one single-entry batch per request, every user id fresh.
        case singleEntry(raffle: UInt64)
    }

    var request: Request
    var connections = 16
    var inFlight = 32
    var requests = 1_000_000
}

/// Shared by the connections of one run: the next request number and the end signal.
final class H2LoadShared: Sendable {
    let next = Atomic<Int>(0)
    let failed = Atomic<Int>(0)
    let total: Int
    let userBase: UInt64
    init(total: Int, userBase: UInt64) {
        self.total = total
        self.userBase = userBase
    }
}

/// A load generator connection as lean as the server's side: it drives an nghttp2 client session
/// from the event loop with no task, promise or allocation per request (request bodies are patched
/// in place from a template), keeps `inFlight` streams open and starts the next one as each closes.
/// This is what lets one core of it keep up with h2load (`raffle-bench get` checks that).
final class H2LoadConnection: ChannelInboundHandler, HTTP2SessionDelegate {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private struct Slot {
        var stream: Int32 = 0
        var start: ContinuousClock.Instant = .now
        var status = 0
        var reply: [UInt8] = []
        var sent = 0
        /// This stream's request body: the template, patched in place (nghttp2 reads it lazily, so
        /// streams in flight cannot share one buffer).
        var body: [UInt8] = []
    }

    private let plan: H2LoadPlan
    private let shared: H2LoadShared
    private let recorder: Recorder
    private var session: HTTP2Session?
    private var context: ChannelHandlerContext?
    private var slots: [Slot]
    private var slotOf: [Int32: Int] = [:]
    private var free: [Int]
    private var headers = HeaderBlock()
    private var body: [UInt8]
    private let finished: EventLoopPromise<Void>
    private var open = 0
    /// Recorded here and handed to the shared recorder in bunches (no lock per request).
    private var local = LocalRecord()

    init(plan: H2LoadPlan, shared: H2LoadShared, recorder: Recorder, finished: EventLoopPromise<Void>) {
        self.plan = plan
        self.shared = shared
        self.recorder = recorder
        self.finished = finished
        slots = Array(repeating: Slot(), count: plan.inFlight)
        free = Array((0..<plan.inFlight).reversed())
        // Every request has the same header block: built once per connection.
        switch plan.request {
        case .get(let path):
            headers.add(":method", "GET")
            headers.add(":path", path)
        case .singleEntry:
            headers.add(":method", "POST")
            headers.add(":path", Wire.entriesPath)
        }
        headers.add(":scheme", "http")
        headers.add(":authority", "raffled")
        if case .singleEntry = plan.request { headers.add("content-type", Wire.contentType) }
        switch plan.request {
        case .get: body = []
        case .singleEntry(let raffle):
            body = (try? FrameEncoder.encode(Frame(requestID: 0, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 1)])))) ?? []
        }
        for i in slots.indices { slots[i].body = body }
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        do {
            var options = HTTP2Session.Options()
            options.manualFlowControl = false
            let s = try HTTP2Session(role: .client, delegate: self, options: options)
            var settings = HTTP2Session.Settings()
            settings.initialWindowSize = 16 << 20
            try s.submitSettings(settings)
            session = s
        } catch {
            finished.fail(error)
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        for _ in 0..<plan.inFlight { startNext() }
        flush()
    }

    func channelInactive(context: ChannelHandlerContext) {
        recorder.merge(&local)
        session?.close()
        session = nil
        finished.succeed(())
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        guard let session else { return }
        let ok = buffer.withUnsafeReadableBytes { (try? session.receive($0)) != nil }
        if !ok {
            context.close(promise: nil)
            return
        }
        while open < plan.inFlight && startNext() {}
        flush()
        if open == 0 { context.close(promise: nil) }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        context.close(promise: nil)
    }

    private func flush() {
        guard let context, let session else { return }
        var out = context.channel.allocator.buffer(capacity: 0)
        _ = try? session.drainOutput(into: &out)
        if out.readableBytes > 0 { context.writeAndFlush(wrapOutboundOut(out), promise: nil) }
    }

    @discardableResult
    private func startNext() -> Bool {
        guard let session, let i = free.last else { return false }
        let n = shared.next.add(1, ordering: .relaxed).oldValue
        guard n < shared.total else { return false }
        free.removeLast()
        guard let id = try? session.submitRequest(headers: headers, hasBody: !body.isEmpty) else {
            free.append(i)
            shared.failed.add(1, ordering: .relaxed)
            return false
        }
        slots[i].stream = id
        slots[i].start = .now
        slots[i].status = 0
        slots[i].reply.removeAll(keepingCapacity: true)
        slots[i].sent = 0
        slotOf[id] = i
        open += 1
        // A fresh user id and request id for this request, patched into the template.
        if !body.isEmpty {
            let user = shared.userBase + UInt64(n)
            slots[i].body.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: UInt64(n).littleEndian, toByteOffset: 12, as: UInt64.self)
                raw.storeBytes(of: user.littleEndian, toByteOffset: Wire.headerSize + 16, as: UInt64.self)
            }
        }
        return true
    }

    // MARK: HTTP2SessionDelegate

    func beginHeaders(stream: Int32) -> HTTP2Session.CallbackResult { .ok }

    func header(stream: Int32, name: UnsafeRawBufferPointer, value: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        if name.count == 7, name.first == UInt8(ascii: ":"), let i = slotOf[stream] {
            var status = 0
            for b in value { status = status * 10 + Int(b &- 48) }
            slots[i].status = status
        }
        return .ok
    }

    func headersComplete(stream: Int32, endStream: Bool) {}

    func data(stream: Int32, bytes: UnsafeRawBufferPointer) -> HTTP2Session.CallbackResult {
        if case .singleEntry = plan.request, let i = slotOf[stream] { slots[i].reply.append(contentsOf: bytes) }
        return .ok
    }

    func dataFrameComplete(stream: Int32, length: Int, endStream: Bool) {}

    func readBody(stream: Int32, into buffer: UnsafeMutableRawBufferPointer, endOfBody: inout Bool) -> Int? {
        guard let i = slotOf[stream] else {
            endOfBody = true
            return 0
        }
        let n = min(slots[i].body.count - slots[i].sent, buffer.count)
        let from = slots[i].sent
        slots[i].body.withUnsafeBytes { src in buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: src[from..<(from + n)])) }
        slots[i].sent += n
        if slots[i].sent == slots[i].body.count { endOfBody = true }
        return n
    }

    func frameSent(stream: Int32, type: UInt8, endStream: Bool) {}

    func invalidFrame(stream: Int32, type: UInt8) {}

    func streamClosed(stream: Int32, errorCode: UInt32) {
        guard let i = slotOf.removeValue(forKey: stream) else { return }
        open -= 1
        free.append(i)
        let micros = (ContinuousClock.now - slots[i].start).micros
        switch plan.request {
        case .get:
            if slots[i].status == 200 { local.ack(entries: 0, micros: micros) } else { local.errors += 1 }
        case .singleEntry:
            let accepted: Int? = slots[i].reply.withUnsafeBytes { raw in
                guard let view = try? FrameDecoder(receiver: .client).decode(raw) else { return nil }
                switch view.payload {
                case .batchAck(let ack): return ack.acceptedCount
                case .throttled: return -1
                default: return nil
                }
            }
            switch accepted {
            case .some(-1): local.throttled += 1
            case .some(let a): local.ack(entries: 1, micros: micros, notAccepted: 1 - a)
            case .none: local.errors += 1
            }
        }
        if local.count >= 4_096 { recorder.merge(&local) }
    }
}

/// Runs a closed-loop HTTP/2 load against `host:port` on one event loop (one core) and waits for it.
func runH2Load(host: String, port: Int, plan: H2LoadPlan, recorder: Recorder, userBase: UInt64) async throws {
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let shared = H2LoadShared(total: plan.requests, userBase: userBase)
    var finished: [EventLoopFuture<Void>] = []
    for _ in 0..<plan.connections {
        let loop = group.next()
        let promise = loop.makePromise(of: Void.self)
        finished.append(promise.futureResult)
        _ = try await ClientBootstrap(group: loop)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(H2LoadConnection(plan: plan, shared: shared, recorder: recorder, finished: promise))
                }
            }
            .connect(host: host, port: port).get()
    }
    for f in finished { try? await f.get() }
    try await group.shutdownGracefully()
}
