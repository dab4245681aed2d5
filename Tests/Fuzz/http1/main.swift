// Fuzz target: the HTTP/1.1 request path in memory (NIOHTTP1's parser, the exchange handler,
// the entry path, the admin API), on a connection that starts as HTTP/1.1.
// Every input must end in replies or a closed connection — never a trap.
import Foundation
import NIOCore
import NIOEmbedded
import RaffleFuzzSupport
import RaffleServer

// nonisolated(unsafe) server: libFuzzer (and the replayer) call the target on one thread only, one input
// at a time, and these are made before the first call.
let loop = EmbeddedEventLoop()
nonisolated(unsafe) let server = try! FuzzServer(eventLoop: loop, directory: NSTemporaryDirectory() + "/raffled-fuzz-http1-\(getpid())")

func fuzz(_ bytes: UnsafeRawBufferPointer) {
    let channel = EmbeddedChannel(loop: loop)
    defer { _ = try? channel.finish() }
    do {
        try server.addHTTP1(to: channel.pipeline.syncOperations)
        _ = try channel.connect(to: try SocketAddress(ipAddress: "127.0.0.1", port: 1)).wait()
        var input = channel.allocator.buffer(capacity: bytes.count)
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
