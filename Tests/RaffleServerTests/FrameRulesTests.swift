@testable import RaffleHTTP2
import Testing

/// The frame scanner alone: which byte streams break which RFC 9113 rule, however they are cut.
@Suite("HTTP/2 frame rules (RFC 9113 checks nghttp2 leaves out)")
struct FrameRulesTests {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
        RawHTTP2.frame(type: type, flags: flags, stream: stream, payload)
    }

    static func headers(_ stream: UInt32, end: Bool = false) -> [UInt8] {
        frame(type: 1, flags: 0x4 | (end ? 1 : 0), stream: stream, [0x82])
    }

    static func data(_ stream: UInt32, end: Bool = false) -> [UInt8] { frame(type: 0, flags: end ? 1 : 0, stream: stream, [1, 2, 3]) }

    static func priority(_ stream: UInt32, on dependency: UInt32, length: Int = 5) -> [UInt8] {
        let payload = [UInt8(dependency >> 24), UInt8(dependency >> 16 & 0xFF), UInt8(dependency >> 8 & 0xFF), UInt8(dependency & 0xFF), 16]
        return frame(type: 2, stream: stream, Array((payload + [0, 0, 0]).prefix(length)))
    }

    /// Scans `bytes` in pieces of `chunk` bytes; the violation and its absolute offset.
    func scan(_ bytes: [UInt8], chunk: Int) -> (FrameRules.Violation, at: Int)? {
        var rules = FrameRules()
        var start = 0
        while start < bytes.count {
            let end = min(start + chunk, bytes.count)
            let v = bytes[start..<end].withUnsafeBytes { rules.scan($0) }
            if let v { return (v, start + v.offset) }
            start = end
        }
        return nil
    }

    /// Every chunking finds the same violation, at the offending frame's start when that frame
    /// began within the piece that completed it.
    func violation(_ bytes: [UInt8]) -> FrameRules.Violation? {
        let whole = scan(bytes, chunk: bytes.count)
        for chunk in 1..<bytes.count {
            let cut = scan(bytes, chunk: chunk)
            #expect(cut?.0.errorCode == whole?.0.errorCode && cut?.0.reason == whole?.0.reason, "chunks of \(chunk)")
            // Never past the offending frame, unless it began in an earlier piece (offset 0).
            if let cut, let whole { #expect(cut.at <= whole.at || cut.0.offset == 0, "chunks of \(chunk)") }
        }
        return whole?.0
    }

    @Test func wellBehavedTrafficPasses() {
        let bytes = Self.preface + Self.frame(type: 4, stream: 0) + Self.headers(1) + Self.data(1) + Self.data(1, end: true)
            + Self.headers(3, end: true) + Self.frame(type: 8, stream: 3, [0, 0, 1, 0]) + Self.headers(5) + Self.headers(5, end: true)
            + Self.priority(7, on: 1) + Self.frame(type: 3, stream: 5, [0, 0, 0, 8])
        #expect(violation(bytes) == nil)
    }

    @Test func dataOrHeadersAfterTheClientEndedTheStream() {
        let afterEnd = Self.preface + Self.headers(1, end: true) + Self.data(1)
        #expect(violation(afterEnd)?.errorCode == FrameRules.streamClosed)
        let afterReset = Self.preface + Self.headers(1) + Self.frame(type: 3, stream: 1, [0, 0, 0, 8]) + Self.headers(1)
        #expect(violation(afterReset)?.errorCode == FrameRules.streamClosed)
        let full = Self.preface + Self.headers(1) + Self.data(1, end: true) + Self.headers(3) + Self.data(1)
        let v = violation(full)
        #expect(v?.errorCode == FrameRules.streamClosed && v?.offset == full.count - Self.data(1).count)
    }

    @Test func headersOnASkippedStreamID() {
        let bytes = Self.preface + Self.headers(5, end: true) + Self.headers(3, end: true)
        #expect(violation(bytes)?.errorCode == FrameRules.protocolError)
        // Trailers on an open stream are not a new stream.
        #expect(violation(Self.preface + Self.headers(1) + Self.headers(3) + Self.headers(1, end: true)) == nil)
    }

    @Test func priorityRules() {
        #expect(violation(Self.preface + Self.priority(3, on: 3))?.errorCode == FrameRules.protocolError)
        #expect(violation(Self.preface + Self.priority(0, on: 1))?.errorCode == FrameRules.protocolError)
        #expect(violation(Self.preface + Self.priority(3, on: 1, length: 4))?.errorCode == FrameRules.frameSizeError)
        #expect(violation(Self.preface + Self.priority(3, on: 1, length: 8))?.errorCode == FrameRules.frameSizeError)
        #expect(violation(Self.preface + Self.priority(3, on: 0x8000_0003)) != nil, "the exclusive bit is not part of the id")
    }

    @Test func onlyTheLast128StreamIDsAreRemembered() {
        var bytes = Self.preface + Self.headers(1, end: true)
        for id in stride(from: UInt32(3), through: 257, by: 2) { bytes += Self.headers(id, end: true) }
        #expect(violation(bytes + Self.data(1)) == nil, "stream 1 is 128 ids back: forgotten, passed to nghttp2")
        #expect(violation(bytes + Self.data(3))?.errorCode == FrameRules.streamClosed, "stream 3 is 127 back: remembered")
    }

    @Test func streamBitsShift() {
        var bits = StreamBits()
        bits.insert(0)
        bits.insert(63)
        bits.shift(by: 1)
        #expect(bits.contains(1) && bits.contains(64) && !bits.contains(0))
        bits.shift(by: 64)
        #expect(bits.contains(65) && !bits.contains(64) && !bits.contains(1))
        bits.shift(by: 63)
        #expect(!bits.contains(65) && !bits.contains(127), "bits past 127 are forgotten")
    }
}
