import NIOCore
import NIOTLS

/// Which HTTP a connection on the main port speaks.
enum HTTPChoice: Equatable {
    case http2, http1
}

/// The first handler of a main-port connection: decides between HTTP/2 and HTTP/1.1, installs the
/// matching handlers behind itself, hands them what it has read and leaves the pipeline.
///
/// - Over TLS it waits for the handshake and follows ALPN (`h2` or `http/1.1`); a client that
///   offered no ALPN is sniffed like plaintext.
/// - On plaintext it looks at the first bytes: the HTTP/2 connection preface
///   (`PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`, RFC 9113 §3.4) means HTTP/2 with prior knowledge;
///   anything else, at the first byte that differs, HTTP/1.1.
///
/// A connection that has decided nothing after `timeout` (a TLS handshake or a preface that never
/// completes) is closed.
final class ProtocolSelector: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    /// Whether to wait for the TLS handshake's ALPN result first.
    enum Mode {
        case sniff, alpn
    }

    static let preface: [UInt8] = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    private var mode: Mode
    private let timeout: TimeAmount
    private let install: (HTTPChoice, ChannelHandlerContext) throws -> Void
    private var buffered: ByteBuffer?
    private var timer: Scheduled<Void>?
    private var decided = false

    /// `install` adds the chosen protocol's handlers at the end of the pipeline (after this one).
    init(mode: Mode, timeout: TimeAmount, install: @escaping (HTTPChoice, ChannelHandlerContext) throws -> Void) {
        self.mode = mode
        self.timeout = timeout
        self.install = install
    }

    /// What the first bytes say: nil while they are a prefix of the HTTP/2 preface too short to tell.
    static func sniff(_ bytes: ByteBuffer) -> HTTPChoice? {
        let view = bytes.readableBytesView
        for (offset, byte) in zip(0..<preface.count, view) where preface[offset] != byte { return .http1 }
        return view.count >= preface.count ? .http2 : nil
    }

    func handlerAdded(context: ChannelHandlerContext) {
        let bound = NIOLoopBound(context, eventLoop: context.eventLoop)
        timer = context.eventLoop.scheduleTask(in: timeout) {
            bound.value.close(promise: nil)
        }
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !decided else {
            context.fireChannelRead(data)
            return
        }
        var bytes = unwrapInboundIn(data)
        if buffered == nil {
            buffered = bytes
        } else {
            buffered?.writeBuffer(&bytes)  // in place: no copy of what was held
        }
        if mode == .sniff, let buffered, let choice = Self.sniff(buffered) { decide(choice, context: context) }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if !decided, let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls {
            switch negotiated {
            case "h2": decide(.http2, context: context)
            case "http/1.1": decide(.http1, context: context)
            default:
                mode = .sniff
                if let buffered, let choice = Self.sniff(buffered) { decide(choice, context: context) }
            }
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func decide(_ choice: HTTPChoice, context: ChannelHandlerContext) {
        decided = true
        timer?.cancel()
        timer = nil
        do {
            try install(choice, context)
        } catch {
            context.close(promise: nil)
            return
        }
        if let bytes = buffered {
            buffered = nil
            context.fireChannelRead(wrapInboundOut(bytes))
            context.fireChannelReadComplete()
        }
        context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
    }
}
