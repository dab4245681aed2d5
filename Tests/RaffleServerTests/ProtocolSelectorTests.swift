import Foundation
import NIOCore
@testable import RaffleServer
import RaffleTestSupport
import Testing

@Suite("Choosing HTTP/2 or HTTP/1.1 on the main port", .timeLimit(.minutes(1)))
struct ProtocolSelectorTests {
    func sniff(_ text: String) -> HTTPChoice? { ProtocolSelector.sniff(ByteBuffer(string: text)) }

    @Test func thePrefaceMeansHTTP2AndAnythingElseHTTP1() {
        #expect(sniff("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n") == .http2)
        #expect(sniff("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\u{12}\u{4}") == .http2, "settings may follow in the same read")
        #expect(sniff("PRI * HTTP/2.0\r\n") == nil, "a prefix of the preface: wait for more")
        #expect(sniff("") == nil)
        #expect(sniff("GET / HTTP/1.1\r\n") == .http1, "decided at the first byte")
        #expect(sniff("P") == nil)
        #expect(sniff("POST /v1/entries HTTP/1.1\r\n") == .http1, "decided at the second byte")
        #expect(sniff("PRI * HTTP/1.1\r\n") == .http1)
    }

    @Test func aPrefaceInPiecesAndASilentClient() async throws {
        let f = try await ServerFixture.start { $0.handshakeTimeoutMilliseconds = 2_000 }
        // The preface split across writes (and reads): still HTTP/2.
        let s = try RawSocket(port: f.server.port)
        // On a thread of its own, not with Task.sleep: resuming could wait for a pool thread past the
        // 2 s handshake limit while other tests block theirs.
        nonisolated(unsafe) let socket = s
        await offPool {
            for piece in [Array(RawHTTP2.preface[..<3]), Array(RawHTTP2.preface[3..<17]), Array(RawHTTP2.preface[17...])] {
                socket.send(piece)
                Thread.sleep(forTimeInterval: 0.02)
            }
            socket.send(RawHTTP2.settings() + RawHTTP2.settingsAck)
            socket.send(RawHTTP2.headers(stream: 1, RawHTTP2.request("GET", "/healthz"), endStream: true))
        }
        // A generous bound: on a loaded machine (a parallel test run) the answer can take a while.
        let (frames, _) = s.read(for: 15) { $0.contains { $0.type == 0 && $0.stream == 1 && $0.flags & 1 != 0 } }
        #expect(frames.contains { $0.type == 1 && $0.stream == 1 }, "answered over HTTP/2")
        // Three bytes of the preface and nothing more: closed after the handshake timeout.
        let silent = try RawSocket(port: f.server.port)
        silent.send(Array(RawHTTP2.preface[..<3]))
        #expect(silent.readBytes(for: 10).closed)
        await f.stop()
    }
}
