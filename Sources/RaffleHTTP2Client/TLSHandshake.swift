import Foundation
import NIOCore
import NIOSSL
import NIOTLS

/// Completes `promise` when the TLS handshake does, or fails it with a message a person can act on.
/// It also watches certificate verification (without changing its result) to say *why* a
/// certificate was refused: BoringSSL's own error only says that verification failed.
final class TLSHandshakeWaiter: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let promise: EventLoopPromise<Void>
    private let peer: String
    private var done = false
    /// The certificate verification refused last (the leaf is checked last), if any.
    private var refused: (notBefore: Int, notAfter: Int, subject: String)?

    init(promise: EventLoopPromise<Void>, peer: String) {
        self.promise = promise
        self.peer = peer
    }

    /// A `NIOSSLVerificationCallback` that keeps BoringSSL's verdict and notes what it refused.
    func observe(_ result: NIOSSLVerificationResult, _ certificate: NIOSSLCertificate) -> NIOSSLVerificationResult {
        if result == .failed {
            refused = (Int(certificate.notValidBefore), Int(certificate.notValidAfter), certificate.description)
        }
        return result
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let tls = event as? TLSUserEvent, case .handshakeCompleted(let negotiated) = tls {
            if negotiated == "h2" {
                finish(nil)
            } else {
                finish(HTTP2ClientError("\(peer) did not agree to HTTP/2 over TLS (ALPN chose \(negotiated ?? "nothing"))"))
                context.close(promise: nil)
            }
            context.pipeline.syncOperations.removeHandler(context: context, promise: nil)
        }
        context.fireUserInboundEventTriggered(event)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if !done { finish(HTTP2ClientError(explain(error))) }
        context.fireErrorCaught(error)
    }

    func channelInactive(context: ChannelHandlerContext) {
        finish(HTTP2ClientError("TLS handshake with \(peer) failed: the connection closed"))
        context.fireChannelInactive()
    }

    /// Removed (after the handshake, or with a channel whose connect failed): never leave the promise open.
    func handlerRemoved(context: ChannelHandlerContext) {
        finish(HTTP2ClientError("TLS handshake with \(peer) failed: the connection closed"))
    }

    private func finish(_ error: HTTP2ClientError?) {
        guard !done else { return }
        done = true
        if let error { promise.fail(error) } else { promise.succeed(()) }
    }

    private func explain(_ error: any Error) -> String {
        let now = Int(Date().timeIntervalSince1970)
        let why: String
        if let refused {
            let date = { (t: Int) in Date(timeIntervalSince1970: TimeInterval(t)).formatted(.iso8601) }
            if refused.notAfter < now {
                why = "its certificate expired on \(date(refused.notAfter))"
            } else if refused.notBefore > now {
                why = "its certificate is not valid before \(date(refused.notBefore))"
            } else {
                why = "its certificate is not signed by a trusted CA (give the CA's PEM file, e.g. --ca-file)"
            }
        } else if let extra = error as? NIOSSLExtraError, extra == .failedToValidateHostname {
            why = "its certificate is not for this host name"
        } else {
            why = "\(error)"
        }
        return "TLS handshake with \(peer) failed: \(why)"
    }
}

extension String {
    /// Whether this is a literal IPv4 or IPv6 address (no SNI is sent for those).
    var isIPAddress: Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, self, &v4) == 1 || inet_pton(AF_INET6, self, &v6) == 1
    }
}
