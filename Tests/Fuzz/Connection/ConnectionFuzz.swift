import Foundation
import NIOCore
import NIOEmbedded
import RaffleServer

/// The connection fuzz targets' one driver: a server connection (HTTP/2 or HTTP/1.1) fed each input in
/// memory on an `EmbeddedChannel`, its ledger committed and its replies drained. Every input must end
/// in replies or a closed connection — never a trap.
public final class ConnectionFuzz {
    /// Which pipeline the connection starts with.
    public enum Kind: String {
        case http1, http2
    }

    private let kind: Kind
    private let loop = EmbeddedEventLoop()
    private let server: FuzzServer
    /// Sent before each input on HTTP/2, so inputs reach frames.
    private static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    /// A driver with its own server and data directory (under the temporary directory).
    public init(_ kind: Kind) {
        self.kind = kind
        server = try! FuzzServer(eventLoop: loop, directory: NSTemporaryDirectory() + "/raffled-fuzz-\(kind.rawValue)-\(getpid())")
    }

    /// Feeds one input to a fresh connection.
    public func fuzz(_ bytes: UnsafeRawBufferPointer) {
        let channel = EmbeddedChannel(loop: loop)
        defer { _ = try? channel.finish() }
        do {
            switch kind {
            case .http1: try server.addHTTP1(to: channel.pipeline.syncOperations)
            case .http2: try server.addHTTP2(to: channel.pipeline.syncOperations)
            }
            _ = try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
            let prefix = kind == .http2 ? Self.preface : []
            var input = channel.allocator.buffer(capacity: prefix.count + bytes.count)
            input.writeBytes(prefix)
            input.writeBytes(bytes)
            try channel.writeInbound(input)
            server.commitAll()
            loop.run()
            while let _ = try channel.readOutbound(as: ByteBuffer.self) {}
        } catch {
            // A closed channel or a refused write: the connection ended, which is an answer.
        }
    }
}
