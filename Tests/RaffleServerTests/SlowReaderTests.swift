import Foundation
import RaffleHTTP2Client
import RaffleServer
import RaffleTestSupport
import Testing

/// HTTP/2 peers that do not take their responses (issue #18: slow readers, zero-window dribble).
@Suite("Slow readers over HTTP/2", .timeLimit(.minutes(1)))
struct SlowReaderTests {
    func start() async throws -> ServerFixture {
        try await ServerFixture.start { $0.idleTimeoutMilliseconds = 3_000 }  // room for a loaded machine
    }

    /// A connection whose streams get a zero window (SETTINGS_INITIAL_WINDOW_SIZE = 0).
    static func zeroWindow(port: Int) throws -> RawSocket {
        let s = try RawSocket(port: port)
        s.send(RawHTTP2.preface + RawHTTP2.settings([(0x4, 0)]) + RawHTTP2.settingsAck)
        s.send(RawHTTP2.headers(stream: 1, RawHTTP2.request("GET", "/healthz"), endStream: true))
        return s
    }

    static func ping(_ n: UInt8) -> [UInt8] { RawHTTP2.frame(type: 6, stream: 0, [n, 0, 0, 0, 0, 0, 0, 0]) }

    /// `/metrics` on a fresh connection, tried again if the server closed it as idle first (the idle
    /// timeout here is 3 s, and a loaded machine can pause this task for that long).
    static func metrics(_ f: ServerFixture) async throws -> String {
        var attempt = 0
        while true {
            attempt += 1
            do {
                let probe = try await HTTP2Client.connect(host: "127.0.0.1", port: f.server.port, group: ServerFixture.group)
                defer { Task { await probe.close() } }
                return String(buffer: try await probe.request(method: "GET", path: "/metrics").body)
            } catch where attempt < 3 {
                continue
            }
        }
    }

    @Test func aPeerThatNeverOpensItsWindowIsCutOffAfterTheIdleTimeout() async throws {
        let f = try await start()
        let port = f.server.port
        // It stays "active" (PINGs) but never takes a byte of its response. (Blocking reads: off
        // the cooperative pool, which the other tests running alongside need.)
        let (closed, gotBody, seconds) = await offPool {
            let s = try? Self.zeroWindow(port: port)
            var closed = false
            var gotBody = false
            let started = Date()
            for n in 0..<60 where !closed {
                guard let s else { break }
                s.send(Self.ping(UInt8(n)))
                let (frames, c) = s.read(for: 0.2)
                closed = c
                gotBody = gotBody || frames.contains { $0.type == 0 && !$0.payload.isEmpty }
            }
            return (closed, gotBody, Date().timeIntervalSince(started))
        }
        #expect(closed, "closed after the idle timeout without progress (\(seconds) s)")
        #expect(!gotBody)
        #expect(try await Self.metrics(f).contains(#"raffled_connections_closed_total{reason="slow_reader"} 1"#))
        await f.stop()
    }

    @Test func aSlowReaderThatKeepsTakingBytesIsServed() async throws {
        let f = try await start()
        let port = f.server.port
        // 4 bytes of window every 300 ms: the response trickles out over longer than the idle timeout.
        let (frames, closed) = await offPool {
            let s = try? Self.zeroWindow(port: port)
            var frames: [RawHTTP2.Frame] = []
            var closed = false
            for _ in 0..<80 where !closed {
                guard let s else { break }
                s.send(RawHTTP2.frame(type: 8, stream: 1, [0, 0, 0, 4]))
                let (more, c) = s.read(for: 0.3)
                frames += more
                closed = c
                if frames.contains(where: { $0.type == 0 && $0.stream == 1 && $0.flags & 1 != 0 }) { break }
            }
            return (frames, closed)
        }
        let body = frames.filter { $0.type == 0 && $0.stream == 1 }.flatMap(\.payload)
        #expect(!closed, "a reader that makes progress is not cut off")
        #expect(String(decoding: body, as: UTF8.self).contains(#""status":"ok""#), "the whole response arrived")
        #expect(body.count > 4 * 10, "it took more windows than fit in the idle timeout")
        await f.stop()
    }
}
