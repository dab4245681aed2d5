// Fuzz target: an HTTP/2 server connection's byte input, in memory (nghttp2, the frame rules, the
// stream table, the entry path, the admin API). The client preface is sent first so inputs reach
// frames. Every input must end in replies or a closed connection — never a trap.
import Foundation
import NIOCore
import NIOEmbedded
import RaffleFuzzSupport
import RaffleServer

// nonisolated(unsafe) server: libFuzzer (and the replayer) call the target on one thread only, one input
// at a time, and these are made before the first call.
let loop = EmbeddedEventLoop()
nonisolated(unsafe) let server = try! FuzzServer(eventLoop: loop, directory: NSTemporaryDirectory() + "/raffled-fuzz-http2-\(getpid())")
let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

func fuzz(_ bytes: UnsafeRawBufferPointer) {
    let channel = EmbeddedChannel(loop: loop)
    defer { _ = try? channel.finish() }
    do {
        try server.addHTTP2(to: channel.pipeline.syncOperations)
        _ = try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var input = channel.allocator.buffer(capacity: preface.count + bytes.count)
        input.writeBytes(preface)
        input.writeBytes(bytes)
        try channel.writeInbound(input)
        server.commitAll()
        loop.run()
        while let _ = try channel.readOutbound(as: ByteBuffer.self) {}
    } catch {
        // A closed channel or a refused write: the connection ended, which is an answer.
    }
}

FuzzMain.run(fuzz)
