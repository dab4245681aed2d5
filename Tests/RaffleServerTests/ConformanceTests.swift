import Foundation
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// RFC 9113 rules an outside conformance suite (h2spec) checks, each with hand-built frames.
@Suite("HTTP/2 conformance (RFC 9113), with raw frames", .timeLimit(.minutes(1)))
struct ConformanceTests {
    static let protocolError: UInt32 = 0x1
    static let flowControlError: UInt32 = 0x3
    static let streamClosed: UInt32 = 0x5

    func connect(_ f: ServerFixture) throws -> RawSocket {
        let s = try RawSocket(port: f.server.port)
        s.send(RawHTTP2.preface + RawHTTP2.settings() + RawHTTP2.settingsAck)
        return s
    }

    /// A RST_STREAM on `stream` or a GOAWAY, with `code`, within the read.
    func answeredWithError(_ s: RawSocket, stream: UInt32, code: UInt32, connectionOnly: Bool = false) -> Bool {
        let (frames, _) = s.read { $0.contains { $0.type == 7 || ($0.type == 3 && $0.stream == stream) } }
        if let goaway = frames.first(where: { $0.type == 7 }) { return goaway.errorCode == code }
        guard !connectionOnly, let reset = frames.first(where: { $0.type == 3 && $0.stream == stream }) else { return false }
        return reset.errorCode == code
    }

    /// Sends a GET /healthz on `stream` and reads its whole response.
    func healthz(_ s: RawSocket, stream: UInt32) -> Bool {
        s.send(RawHTTP2.headers(stream: stream, RawHTTP2.request("GET", "/healthz"), endStream: true))
        let (frames, _) = s.read { $0.contains { $0.type == 0 && $0.stream == stream && $0.flags & 1 != 0 } }
        return frames.contains { $0.type == 1 && $0.stream == stream }
    }

    func entriesHeaders(stream: UInt32, endStream: Bool = false) -> [UInt8] {
        RawHTTP2.headers(stream: stream, RawHTTP2.request("POST", Wire.entriesPath, extra: [("content-type", Wire.contentType)]), endStream: endStream)
    }

    static func priority(stream: UInt32, dependsOn: UInt32) -> [UInt8] {
        RawHTTP2.frame(
            type: 2, stream: stream, [UInt8(dependsOn >> 24 & 0x7F), UInt8(dependsOn >> 16 & 0xFF), UInt8(dependsOn >> 8 & 0xFF), UInt8(dependsOn & 0xFF), 15])
    }

    static func windowUpdate(stream: UInt32, _ increment: UInt32) -> [UInt8] {
        RawHTTP2.frame(type: 8, stream: stream, [UInt8(increment >> 24 & 0x7F), UInt8(increment >> 16 & 0xFF), UInt8(increment >> 8 & 0xFF), UInt8(increment & 0xFF)])
    }

    @Test("§5.1: DATA on a stream the client reset is STREAM_CLOSED")
    func dataAfterResetIsStreamClosed() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        s.send(entriesHeaders(stream: 1) + RawHTTP2.rstStream(stream: 1))
        s.send(RawHTTP2.data(stream: 1, [1, 2, 3]))
        #expect(answeredWithError(s, stream: 1, code: Self.streamClosed))
        await f.stop()
    }

    @Test("§5.1: HEADERS or DATA after both sides ended the stream is STREAM_CLOSED")
    func framesAfterBothEndedAreStreamClosed() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        #expect(healthz(s, stream: 1))
        s.send(RawHTTP2.data(stream: 1, [1]))
        #expect(answeredWithError(s, stream: 1, code: Self.streamClosed))
        let t = try connect(f)
        #expect(healthz(t, stream: 1))
        t.send(RawHTTP2.headers(stream: 1, RawHTTP2.request("GET", "/healthz"), endStream: true))
        #expect(answeredWithError(t, stream: 1, code: Self.streamClosed))
        await f.stop()
    }

    @Test("§5.1: DATA after the client ended its side (half-closed remote) is STREAM_CLOSED")
    func dataOnHalfClosedIsStreamClosed() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        s.send(RawHTTP2.headers(stream: 1, RawHTTP2.request("GET", "/healthz"), endStream: true) + RawHTTP2.data(stream: 1, [1]))
        #expect(answeredWithError(s, stream: 1, code: Self.streamClosed))
        await f.stop()
    }

    @Test("§5.1.1: a stream id smaller than one already used is a connection PROTOCOL_ERROR")
    func smallerStreamIDIsAConnectionError() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        #expect(healthz(s, stream: 5))
        s.send(RawHTTP2.headers(stream: 3, RawHTTP2.request("GET", "/healthz"), endStream: true))
        #expect(answeredWithError(s, stream: 3, code: Self.protocolError, connectionOnly: true))
        await f.stop()
    }

    @Test("§5.3.1: a stream that depends on itself is a PROTOCOL_ERROR")
    func selfDependencyIsAProtocolError() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        s.send(Self.priority(stream: 1, dependsOn: 1))
        #expect(answeredWithError(s, stream: 1, code: Self.protocolError))
        await f.stop()
    }

    @Test("§6.3: PRIORITY on stream 0 is a connection PROTOCOL_ERROR")
    func priorityOnStreamZeroIsAConnectionError() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        s.send(Self.priority(stream: 0, dependsOn: 1))
        #expect(answeredWithError(s, stream: 0, code: Self.protocolError, connectionOnly: true))
        await f.stop()
    }

    @Test("§6.9.1: a WINDOW_UPDATE that takes a stream's window past 2^31-1 resets it with FLOW_CONTROL_ERROR")
    func streamWindowOverflowIsAFlowControlError() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        s.send(RawHTTP2.headers(stream: 1, RawHTTP2.request("GET", "/healthz"), endStream: false))
        s.send(Self.windowUpdate(stream: 1, 0x7FFF_FFFF) + Self.windowUpdate(stream: 1, 0x7FFF_FFFF))
        #expect(answeredWithError(s, stream: 1, code: Self.flowControlError))
        #expect(healthz(s, stream: 3), "a stream error: the connection goes on")
        await f.stop()
    }

    @Test("§8.1: a second HEADERS without END_STREAM is a PROTOCOL_ERROR")
    func trailersWithoutEndStreamAreAProtocolError() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        s.send(entriesHeaders(stream: 1) + RawHTTP2.data(stream: 1, []))
        s.send(RawHTTP2.headers(stream: 1, [("x-trailer", "1")], endStream: false))
        #expect(answeredWithError(s, stream: 1, code: Self.protocolError))
        await f.stop()
    }

    @Test("§8.1: a request is answered only once it is complete (END_STREAM)")
    func noAnswerBeforeTheRequestEnds() async throws {
        let f = try await ServerFixture.start()
        let s = try connect(f)
        s.send(RawHTTP2.headers(stream: 1, RawHTTP2.request("GET", "/healthz"), endStream: false))
        let (early, _) = s.read(for: 0.5) { $0.contains { $0.stream == 1 } }
        #expect(!early.contains { $0.stream == 1 }, "nothing on the stream before END_STREAM")
        s.send(RawHTTP2.data(stream: 1, [], endStream: true))
        let (frames, _) = s.read { $0.contains { $0.type == 0 && $0.stream == 1 && $0.flags & 1 != 0 } }
        #expect(frames.contains { $0.type == 1 && $0.stream == 1 }, "answered once it ended")
        await f.stop()
    }
}
