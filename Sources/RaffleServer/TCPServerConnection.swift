import Logging
import NIOCore
import RaffleAdmission
import RaffleWire
import RaffleWireNIO

/// One raw-TCP connection (PROTOCOL.md §12): frames back to back in each direction, answered in
/// order, acks released once durable. It runs the same entry path as HTTP/2 (`LoopContext.assemble`
/// and `processFrames`): whole frames are decoded straight from NIO's read buffer, a frame split
/// across reads is completed in a preallocated ingest buffer.
///
/// Who: raw TCP carries no credentials in protocol version 1, so every connection is in the
/// anonymous class with its own bucket (`--anonymous-rate`); API keys are an HTTP/2 feature.
final class TCPServerConnection: ChannelInboundHandler, LoopConnection {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let loop: LoopContext
    private let logger: Logger
    private var context: ChannelHandlerContext?
    /// The connection's ingest session: reply queue, partial frame, and `finished` (no more frames
    /// are taken: a connection-level error, end of input, or shutdown; the connection closes once
    /// every reply is sent) — the same type and code an HTTP/2 stream or HTTP/1.1 exchange uses.
    private var session = StreamState()
    private var anonymous: LocalGCRA
    private var lifetime = ConnectionLifetime()
    private var closed: Bool { lifetime.ended }
    private var waiting = false
    private var readPaused = false
    private var lastActivityNanos: UInt64

    init(loop: LoopContext, logger: Logger) {
        self.loop = loop
        self.logger = logger
        anonymous = LocalGCRA(loop.configuration.admission.anonymous)
        lastActivityNanos = monotonicNanoseconds()
        session.reset(id: 0, now: 0)
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        let check = TimeAmount.milliseconds(max(loop.configuration.idleTimeoutMilliseconds / 4, 10))
        lifetime.begin(self, loop: loop, on: context.eventLoop, every: check) { $0.checkIdle() }
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
        session.partial.drop(loop)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !session.finished else { return }  // after a connection-level error the rest is dropped
        let buffer = unwrapInboundIn(data)
        let now = monotonicNanoseconds()
        lastActivityNanos = now
        let at = IngestContext(client: nil, nowNanos: now, wallMilliseconds: wallClockMilliseconds(), transport: .tcp)
        buffer.withUnsafeReadableBytes { bytes in session.ingest(bytes, loop: loop, at: at, anonymous: &anonymous) }
        // Backpressure: stop reading while replies pile up waiting for the log.
        if session.replies.out.readableBytes > loop.configuration.maxPendingReplyBytesPerStream && !readPaused {
            readPaused = true
            context.channel.setOption(.autoRead, value: false).whenFailure { _ in }
        }
        settle()
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        context.flush()
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let e = event as? ChannelEvent, e == .inputClosed {
            // The client half-closed: answer what it sent, then close.
            session.entriesBodyEnded(loop, source: "connection input", emptyIsError: false)
            session.finished = true
            settle()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("raw TCP connection error: \(error)")
        context.close(promise: nil)
    }

    /// Sends what is durable; waits for the next commit if something is not; closes when done.
    private func settle() {
        guard let context, !closed else { return }
        if session.replies.advance(loop) || session.replies.sendable > 0 {
            let n = session.replies.sendable
            if n > 0, let slice = session.replies.out.readSlice(length: n) {
                context.write(wrapOutboundOut(slice), promise: nil)
            }
            session.replies.compact()
        }
        if session.replies.hasUnreleased {
            if !waiting {
                waiting = true
                loop.wait(self)
            }
        } else if readPaused {
            readPaused = false
            context.channel.setOption(.autoRead, value: true).whenFailure { _ in }
        }
        if session.isDrained {
            let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0))).whenComplete { _ in
                bound.value.close(promise: nil)
            }
        }
    }

    func durabilityAdvanced() {
        waiting = false
        settle()
        context?.flush()
    }

    func beginShutdown() {
        session.finished = true
        settle()
        context?.flush()
    }

    private func checkIdle() {
        guard let context, !closed else { return }
        let idle = UInt64(max(loop.configuration.idleTimeoutMilliseconds, 0)) * 1_000_000
        if !session.replies.hasUnreleased && monotonicNanoseconds() - lastActivityNanos > idle {
            logger.debug("closing an idle raw TCP connection")
            context.close(promise: nil)
        }
    }
}
