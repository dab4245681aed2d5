import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Hand-built HTTP/2 frames, for tests that must send what a well-behaved client never would.
enum RawHTTP2 {
    static let preface = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8)

    static func frame(type: UInt8, flags: UInt8 = 0, stream: UInt32, _ payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        var out: [UInt8] = [UInt8(n >> 16 & 0xFF), UInt8(n >> 8 & 0xFF), UInt8(n & 0xFF), type, flags]
        out += [UInt8(stream >> 24 & 0x7F), UInt8(stream >> 16 & 0xFF), UInt8(stream >> 8 & 0xFF), UInt8(stream & 0xFF)]
        return out + payload
    }

    static func settings(_ entries: [(UInt16, UInt32)] = []) -> [UInt8] {
        var payload: [UInt8] = []
        for (id, v) in entries {
            payload += [UInt8(id >> 8), UInt8(id & 0xFF)]
            payload += [UInt8(v >> 24), UInt8(v >> 16 & 0xFF), UInt8(v >> 8 & 0xFF), UInt8(v & 0xFF)]
        }
        return frame(type: 4, stream: 0, payload)
    }

    static let settingsAck = frame(type: 4, flags: 1, stream: 0)

    /// HPACK integer with an `n`-bit prefix.
    static func integer(_ value: Int, prefix: Int, first: UInt8 = 0) -> [UInt8] {
        let max = (1 << prefix) - 1
        if value < max { return [first | UInt8(value)] }
        var out = [first | UInt8(max)]
        var rest = value - max
        while rest >= 128 {
            out.append(UInt8(rest % 128 + 128))
            rest /= 128
        }
        out.append(UInt8(rest))
        return out
    }

    /// An HPACK block of literal fields (no indexing, no Huffman).
    static func block(_ fields: [(String, String)]) -> [UInt8] {
        var out: [UInt8] = []
        for (name, value) in fields {
            out.append(0x00)
            out += integer(name.utf8.count, prefix: 7)
            out += Array(name.utf8)
            out += integer(value.utf8.count, prefix: 7)
            out += Array(value.utf8)
        }
        return out
    }

    static func request(_ method: String, _ path: String, extra: [(String, String)] = []) -> [(String, String)] {
        [(":method", method), (":path", path), (":scheme", "http"), (":authority", "test")] + extra
    }

    /// HEADERS (+ CONTINUATION when the block is larger than 16 KiB).
    static func headers(stream: UInt32, _ fields: [(String, String)], endStream: Bool) -> [UInt8] {
        let b = block(fields)
        let end: UInt8 = endStream ? 0x1 : 0
        guard b.count > 16_000 else { return frame(type: 1, flags: 0x4 | end, stream: stream, b) }
        return frame(type: 1, flags: end, stream: stream, Array(b[..<16_000]))
            + frame(type: 9, flags: 0x4, stream: stream, Array(b[16_000...]))
    }

    static func data(stream: UInt32, _ bytes: [UInt8], endStream: Bool = false) -> [UInt8] {
        frame(type: 0, flags: endStream ? 1 : 0, stream: stream, bytes)
    }

    static func rstStream(stream: UInt32, code: UInt32 = 8) -> [UInt8] {
        frame(type: 3, stream: stream, [UInt8(code >> 24), UInt8(code >> 16 & 0xFF), UInt8(code >> 8 & 0xFF), UInt8(code & 0xFF)])
    }

    /// A received frame.
    struct Frame {
        var type: UInt8
        var flags: UInt8
        var stream: UInt32
        var payload: [UInt8]

        /// GOAWAY's or RST_STREAM's error code.
        var errorCode: UInt32? {
            let at = type == 7 ? 4 : type == 3 ? 0 : -1
            guard at >= 0, payload.count >= at + 4 else { return nil }
            return payload[at..<(at + 4)].reduce(0) { $0 << 8 | UInt32($1) }
        }
    }

    static func parse(_ bytes: [UInt8]) -> [Frame] {
        var frames: [Frame] = []
        var i = 0
        while i + 9 <= bytes.count {
            let n = Int(bytes[i]) << 16 | Int(bytes[i + 1]) << 8 | Int(bytes[i + 2])
            guard i + 9 + n <= bytes.count else { break }
            let stream = UInt32(bytes[i + 5] & 0x7F) << 24 | UInt32(bytes[i + 6]) << 16 | UInt32(bytes[i + 7]) << 8 | UInt32(bytes[i + 8])
            frames.append(Frame(type: bytes[i + 3], flags: bytes[i + 4], stream: stream, payload: Array(bytes[(i + 9)..<(i + 9 + n)])))
            i += 9 + n
        }
        return frames
    }
}

/// A blocking TCP socket to 127.0.0.1 for raw-frame tests.
final class RawSocket {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard rc == 0 else { throw RawSocketError() }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    struct RawSocketError: Error {}

    func send(_ bytes: [UInt8]) {
        var offset = 0
        while offset < bytes.count {
            let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress.map { $0 + offset }, bytes.count - offset, Int32(MSG_NOSIGNAL)) }
            if n <= 0 { return }
            offset += n
        }
    }

    /// Reads until `done` says so, the peer closes (sets `closed`), or `seconds` pass.
    func read(for seconds: Double = 3, until done: ([Frame]) -> Bool = { _ in false }) -> (frames: [RawHTTP2.Frame], closed: Bool) {
        let (bytes, closed) = readBytes(for: seconds) { done(RawHTTP2.parse($0)) }
        return (RawHTTP2.parse(bytes), closed)
    }

    /// Reads raw bytes until `done` says so, the peer closes (sets `closed`), or `seconds` pass.
    func readBytes(for seconds: Double = 3, until done: ([UInt8]) -> Bool = { _ in false }) -> (bytes: [UInt8], closed: Bool) {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while Date() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (bytes, true) }
            if n > 0 {
                bytes += buffer[..<n]
                if done(bytes) { return (bytes, false) }
            } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                return (bytes, true)
            }
        }
        return (bytes, false)
    }

    typealias Frame = RawHTTP2.Frame
}
