import CNGHTTP2
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Smoke test: the system libnghttp2 links, reports a version, and a client session produces the
/// HTTP/2 connection preface and a SETTINGS frame through `nghttp2_session_mem_send`.
@Suite struct NGHTTP2SmokeTests {
    @Test func libraryReportsItsVersion() throws {
        let info = try #require(nghttp2_version(0))
        let version = String(cString: info.pointee.version_str)
        #expect(version.hasPrefix("1."), "unexpected libnghttp2 version \(version)")
        #expect(info.pointee.version_num >= 0x01_34_00, "need libnghttp2 >= 1.52")
    }

    @Test func clientSessionWritesPrefaceAndSettings() throws {
        var callbacks: OpaquePointer?
        #expect(nghttp2_session_callbacks_new(&callbacks) == 0)
        defer { nghttp2_session_callbacks_del(callbacks) }
        var session: OpaquePointer?
        #expect(nghttp2_session_client_new(&session, callbacks, nil) == 0)
        defer { nghttp2_session_del(session) }

        var settings = nghttp2_settings_entry(settings_id: Int32(NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS.rawValue), value: 100)
        #expect(nghttp2_submit_settings(session, UInt8(NGHTTP2_FLAG_NONE.rawValue), &settings, 1) == 0)

        var out: [UInt8] = []
        while true {
            var chunk: UnsafePointer<UInt8>?
            let n = nghttp2_session_mem_send(session, &chunk)
            #expect(n >= 0)
            guard n > 0, let chunk else { break }
            out.append(contentsOf: UnsafeBufferPointer(start: chunk, count: n))
        }
        let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)
        #expect(Array(out.prefix(preface.count)) == preface)
        // Then a SETTINGS frame: 9-byte header, type 0x4, one 6-byte entry.
        let frame = Array(out.dropFirst(preface.count))
        try #require(frame.count >= 15)
        #expect(frame[3] == 0x04)
        #expect(Int(frame[0]) << 16 | Int(frame[1]) << 8 | Int(frame[2]) == 6)
        #expect(frame[9...10] == [0x00, 0x03])  // SETTINGS_MAX_CONCURRENT_STREAMS
        #expect(frame[11...14] == [0, 0, 0, 100])
    }

    /// Debian's 1.52 still reports NGHTTP2_VERSION 1.52.0 but carries the backported reset and
    /// CONTINUATION limits the server relies on: check the symbols, not the version.
    @Test func backportedLimitsArePresent() {
        for symbol in ["nghttp2_option_set_stream_reset_rate_limit", "nghttp2_option_set_max_continuations",
                       "nghttp2_option_set_max_outbound_ack", "nghttp2_option_set_no_closed_streams"] {
            #expect(dlsym(UnsafeMutableRawPointer(bitPattern: 0), symbol) != nil, "\(symbol) missing from libnghttp2")
        }
    }
}
