import Foundation
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// Each protection of PROTOCOL.md §11 / the server issue, triggered with hand-built frames.
@Suite("HTTP/2 hardening, with raw frames", .timeLimit(.minutes(1)))
struct HardeningTests {
    static let enhanceYourCalm: UInt32 = 0xB

    func connect(_ f: ServerFixture) throws -> RawSocket {
        let s = try RawSocket(port: f.server.port)
        s.send(RawHTTP2.preface + RawHTTP2.settings() + RawHTTP2.settingsAck)
        return s
    }

    func healthzWorks(_ s: RawSocket, stream: UInt32) -> Bool {
        s.send(RawHTTP2.headers(stream: stream, RawHTTP2.request("GET", "/healthz"), endStream: true))
        let (frames, _) = s.read { $0.contains { $0.type == 0 && $0.stream == stream && $0.flags & 1 != 0 } }
        return frames.contains { $0.type == 1 && $0.stream == stream }
    }

    @Test func advertisesItsSettings() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        let (frames, _) = s.read { $0.contains { $0.type == 4 && $0.flags == 0 } }
        let settings = try #require(frames.first { $0.type == 4 && $0.flags == 0 })
        var values: [UInt16: UInt32] = [:]
        for k in stride(from: 0, to: settings.payload.count - 5, by: 6) {
            let id = UInt16(settings.payload[k]) << 8 | UInt16(settings.payload[k + 1])
            values[id] = settings.payload[(k + 2)..<(k + 6)].reduce(0) { $0 << 8 | UInt32($1) }
        }
        #expect(values[0x3] == 256, "MAX_CONCURRENT_STREAMS")
        #expect(values[0x9] == 1, "NO_RFC7540_PRIORITIES")
        #expect(values[0x6] == 16_384, "MAX_HEADER_LIST_SIZE")
        #expect((values[0x4] ?? 0) >= 1 << 20, "a large INITIAL_WINDOW_SIZE")
        await f.stop()
    }

    @Test func tooManyHeaderFieldsResetTheStreamOnly() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        let fields = RawHTTP2.request("GET", "/healthz", extra: (0..<80).map { ("x-h\($0)", "v") })
        s.send(RawHTTP2.headers(stream: 1, fields, endStream: true))
        let (frames, _) = s.read { $0.contains { $0.type == 3 } }
        #expect(frames.contains { $0.type == 3 && $0.stream == 1 }, "RST_STREAM for the oversized request")
        #expect(healthzWorks(s, stream: 3), "the connection goes on")
        await f.stop()
    }

    @Test func oversizedHeaderListResetsTheStream() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        let big = String(repeating: "a", count: 1_100)
        let fields = RawHTTP2.request("GET", "/healthz", extra: (0..<16).map { ("x-big\($0)", big) })
        s.send(RawHTTP2.headers(stream: 1, fields, endStream: true))
        let (frames, _) = s.read { $0.contains { $0.type == 3 } }
        #expect(frames.contains { $0.type == 3 && $0.stream == 1 })
        #expect(healthzWorks(s, stream: 3))
        await f.stop()
    }

    @Test func emptyDataFloodGetsEnhanceYourCalm() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        var flood = RawHTTP2.headers(stream: 1, RawHTTP2.request("POST", Wire.entriesPath, extra: [("content-type", Wire.contentType)]), endStream: false)
        for _ in 0..<1_200 { flood += RawHTTP2.data(stream: 1, []) }
        s.send(flood)
        let (frames, _) = s.read { $0.contains { $0.type == 7 } }
        #expect(frames.first { $0.type == 7 }?.errorCode == Self.enhanceYourCalm)
        await f.stop()
    }

    @Test func resetFloodGetsGoAway() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        var flood: [UInt8] = []
        for k in 0..<1_500 {
            let id = UInt32(2 * k + 1)
            flood += RawHTTP2.headers(stream: id, RawHTTP2.request("POST", "/v1/raffles"), endStream: false) + RawHTTP2.rstStream(stream: id)
        }
        s.send(flood)
        let (frames, _) = s.read { $0.contains { $0.type == 7 } }
        #expect(frames.first { $0.type == 7 }?.errorCode == Self.enhanceYourCalm, "the glitch budget (every reset costs one) ends the connection")
        await f.stop()
    }

    /// PING and SETTINGS floods (each frame asks for an acknowledgement): GOAWAY(ENHANCE_YOUR_CALM)
    /// after the budget, counted in the metric; a few of them are fine.
    @Test(arguments: [UInt8(6), UInt8(4)]) func pingAndSettingsFloodsGetEnhanceYourCalm(type: UInt8) async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        let one = type == 6 ? RawHTTP2.frame(type: 6, stream: 0, [1, 2, 3, 4, 5, 6, 7, 8]) : RawHTTP2.settings([(0x3, 100)])
        s.send(Array((0..<20).map { _ in one }.joined()))
        #expect(healthzWorks(s, stream: 1), "twenty are fine")
        s.send(Array((0..<1_200).map { _ in one }.joined()))
        let (frames, _) = s.read { $0.contains { $0.type == 7 } }
        #expect(frames.first { $0.type == 7 }?.errorCode == Self.enhanceYourCalm)
        let metrics = String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
        #expect(metrics.contains("raffled_goaway_enhance_your_calm_total 1"))
        await f.stop()
    }

    @Test func tooManySettingsEntriesEndTheConnection() async throws {
        let f = try await ServerFixture.start()
        let s = try RawSocket(port: f.server.port)
        s.send(RawHTTP2.preface + RawHTTP2.settings((0..<40).map { _ in (0x3, 100) }))
        let (frames, closed) = s.read { $0.contains { $0.type == 7 } }
        #expect(frames.first { $0.type == 7 }?.errorCode == Self.enhanceYourCalm || closed)
        await f.stop()
    }

    @Test func slowHandshakeIsClosed() async throws {
        let f = try await ServerFixture.start { $0.handshakeTimeoutMilliseconds = 200 }
        let s = try RawSocket(port: f.server.port)
        s.send(Array(RawHTTP2.preface.prefix(10)))
        let (_, closed) = s.read(for: 5)
        #expect(closed, "a connection that never completes the preface is closed")
        await f.stop()
    }

    @Test func idleConnectionGetsGoAwayAndIsClosed() async throws {
        let f = try await ServerFixture.start { $0.idleTimeoutMilliseconds = 200 }
        let s = try connect(f)
        #expect(healthzWorks(s, stream: 1))
        let (frames, closed) = s.read(for: 5)
        #expect(frames.first { $0.type == 7 }?.errorCode == 0, "GOAWAY(NO_ERROR)")
        #expect(closed)
        await f.stop()
    }
}
