import Foundation
import RaffleAdmission
import RaffleCore
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// A raw TCP socket for frames (no HTTP/2): the hardening tests' `RawSocket`, read as frames.
final class FrameSocket {
    private let socket: RawSocket
    var fd: Int32 { socket.fd }

    init(port: Int) throws { socket = try RawSocket(port: port) }

    func send(_ bytes: [UInt8]) { socket.send(bytes) }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads frames until `count` arrived, the peer closes, or `seconds` pass.
    func read(frames count: Int = .max, for seconds: Double = 5) -> (frames: [Frame], closed: Bool) {
        var bytes: [UInt8] = []
        let deadline = Date().addingTimeInterval(seconds)
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let decoder = FrameDecoder(receiver: .client)
        func decoded() -> [Frame] { (try? decoder.decodeFrames(bytes).frames) ?? [] }
        while Date() < deadline {
            let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if n == 0 { return (decoded(), true) }
            if n > 0 {
                bytes += buffer[..<n]
                if decoded().count >= count { return (decoded(), false) }
            } else if errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR {
                return (decoded(), true)
            }
        }
        return (decoded(), false)
    }
}

/// A UDP socket "connected" to the server's UDP port.
final class DatagramSocket {
    let fd: Int32

    init(port: Int) {
        fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var timeout = timeval(tv_sec: 0, tv_usec: 300_000)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    }

    deinit { close(fd) }

    func send(_ bytes: [UInt8]) { _ = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, 0) } }

    /// The next datagram, or nil after the timeout.
    func receive() -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 65_536)
        let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
        return n >= 0 ? Array(buffer[..<n]) : nil
    }

    /// Sends `request` and returns the reply datagram carrying its request id (nil: none within a
    /// few seconds; a request shorter than a header gets none, checked within the receive timeout).
    /// Late replies to earlier datagrams are skipped, so a slow machine cannot shift the answers.
    func exchange(_ request: [UInt8]) -> [UInt8]? {
        send(request)
        guard request.count >= 20 else { return receive() }
        let id = Array(request[12..<20])
        let deadline = Date().addingTimeInterval(3)
        while Date() < deadline {
            guard let reply = receive() else { continue }
            if reply.count >= 20 && Array(reply[12..<20]) == id { return reply }
        }
        return nil
    }
}

func checksummed(_ frame: Frame) throws -> [UInt8] {
    var f = frame
    f.flags.insert(.checksum)
    return try FrameEncoder.encode(f)
}

@Suite("Raw TCP (PROTOCOL.md §12)", .timeLimit(.minutes(1)))
struct RawTCPTests {
    @Test func pipelinedFramesAreAnsweredInOrder() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let port = try #require(f.server.tcpPort)
        #expect(port != f.server.port)
        let s = try FrameSocket(port: port)
        var bytes: [UInt8] = []
        var expected: [UInt64] = []
        for k in UInt64(1)...20 {
            bytes += batchFrame(raffle: raffle, users: (k * 10)..<(k * 10 + 5), requestID: 100 + k)
            expected.append(100 + k)
            if k == 7 {
                bytes += try FrameEncoder.encode(Frame(requestID: 500, body: .ping(42)))
                expected.append(500)
            }
            if k == 13 {
                bytes += batchFrame(raffle: 999_999, users: [1], requestID: 600)  // unknown raffle: a frame-level error
                expected.append(600)
            }
        }
        s.send(bytes)
        let (frames, _) = s.read(frames: expected.count)
        #expect(frames.map(\.requestID) == expected, "one reply per frame, in request order")
        for frame in frames {
            switch frame.body {
            case .batchAck(_, let outcomes): #expect(outcomes.count == 5 && outcomes.allSatisfy { $0 == .accepted })
            case .pong(let v): #expect(v == 42)
            case .error(let code, _): #expect(code == .unknownRaffle && frame.requestID == 600)
            default: Issue.record("unexpected \(frame)")
            }
        }
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 100)
        await f.stop()
    }

    @Test func aConnectionClosedMidFrameLosesNothingAcknowledged() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let port = try #require(f.server.tcpPort)
        // Half-close inside a frame: three acks, then TRUNCATED_FRAME, then the server closes.
        let s = try FrameSocket(port: port)
        var whole: [UInt8] = []
        for k in UInt64(1)...3 { whole += batchFrame(raffle: raffle, users: (k * 100)..<(k * 100 + 10), requestID: k) }
        let cut = Array(batchFrame(raffle: raffle, users: 900..<910, requestID: 4).prefix(50))
        s.send(whole + cut)
        s.shutdownWrite()
        let (frames, closed) = s.read()
        #expect(frames.map(\.requestID) == [1, 2, 3, 4], "TRUNCATED_FRAME carries the cut frame's id: its header arrived whole")
        if case .error(let code, _) = frames.last?.body { #expect(code == .truncatedFrame) } else { Issue.record("expected TRUNCATED_FRAME") }
        #expect(closed, "the server closes after answering")
        // An abrupt close after the acks arrived: the acknowledged entries are stored.
        let t = try FrameSocket(port: port)
        t.send(batchFrame(raffle: raffle, users: 2_000..<2_050, requestID: 9))
        #expect(t.read(frames: 1).frames.first?.requestID == 9)
        t.send(Array(batchFrame(raffle: raffle, users: 3_000..<3_050, requestID: 10).prefix(100)))
        shutdown(t.fd, Int32(SHUT_RDWR))  // gone mid-frame, without a word
        try await Task.sleep(for: .milliseconds(50))
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 30 + 50)
        await f.stop()
    }

    @Test func repliesToChecksummedRequestsCarryAChecksum() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let s = try FrameSocket(port: try #require(f.server.tcpPort))
        s.send(try checksummed(Frame(requestID: 1, body: .entryBatch(raffleID: raffle + 50, entries: [Entry(userID: 1)]))))
        s.send(try checksummed(Frame(requestID: 2, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 1)]))))
        let frames = s.read(frames: 2).frames
        #expect(frames.map(\.requestID) == [1, 2])
        #expect(frames.first?.errorCode == .unknownRaffle && frames.allSatisfy { $0.flags.contains(.checksum) }, "\(frames)")
        await f.stop()
    }

    @Test func aConnectionLevelErrorIsAnsweredThenTheConnectionCloses() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let s = try FrameSocket(port: try #require(f.server.tcpPort))
        var garbage = batchFrame(raffle: raffle, users: [7], requestID: 2)
        garbage[0] = 0x58  // bad magic: the stream cannot be framed any further
        s.send(batchFrame(raffle: raffle, users: [5], requestID: 1) + garbage)
        let (frames, closed) = s.read()
        #expect(frames.first?.requestID == 1)
        if case .error(let code, _) = frames.last?.body { #expect(code == .badMagic) } else { Issue.record("expected BAD_MAGIC, got \(frames)") }
        #expect(closed)
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 1)
        await f.stop()
    }
}

@Suite("UDP (PROTOCOL.md §13)", .timeLimit(.minutes(1)))
struct UDPTests {
    @Test func aChecksummedBatchIsAcknowledgedWithAReplyNoLargerThanTheRequest() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let u = DatagramSocket(port: try #require(f.server.udpPort))
        let request = try checksummed(Frame(requestID: 77, body: .entryBatch(raffleID: raffle, entries: (1...20).map { Entry(userID: $0) })))
        let reply = try #require(u.exchange(request))
        #expect(reply.count <= request.count)
        let frame = try #require(try FrameDecoder(receiver: .client, requireChecksum: true).decodeAll(reply).first)
        #expect(frame.requestID == 77 && frame.flags.contains(.checksum), "\(frame)")
        #expect(frame.outcomes == Array(repeating: .accepted, count: 20), "\(frame)")
        // A retransmission is harmless.
        let again = try #require(u.exchange(request))
        #expect(try FrameDecoder(receiver: .client).decodeAll(again).first?.outcomes == Array(repeating: .alreadyEntered, count: 20))
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries == 20)
        await f.stop()
    }

    @Test func badDatagramsGetSmallErrorsOrNothing() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let u = DatagramSocket(port: try #require(f.server.udpPort))
        func error(of reply: [UInt8]?) -> ProtocolErrorCode? {
            guard let reply, case .error(let code, _) = try? FrameDecoder(receiver: .client).decodeAll(reply).first?.body else { return nil }
            return code
        }
        // No checksum.
        let plain = batchFrame(raffle: raffle, users: [1, 2], requestID: 5)
        let r1 = u.exchange(plain)
        #expect(error(of: r1) == .checksumRequired && (r1?.count ?? .max) <= plain.count)
        // Too short to answer without amplifying: no reply at all.
        #expect(u.exchange([0x52, 0x46, 1, 1]) == nil)
        // Trailing bytes after the frame.
        let padded = try checksummed(Frame(requestID: 6, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 3)]))) + [0, 0, 0, 0]
        let r2 = u.exchange(padded)
        #expect(error(of: r2) == .malformedPayload && (r2?.count ?? .max) <= padded.count, "\(String(describing: try? FrameDecoder(receiver: .client).decodeAll(r2 ?? [])))")
        // Over the datagram limit.
        let big = try checksummed(Frame(requestID: 7, body: .entryBatch(raffleID: raffle, entries: (1...100).map { Entry(userID: $0 + 1_000) })))
        #expect(big.count > 1_200)
        let r3 = u.exchange(big)
        #expect(error(of: r3) == .frameTooLarge && (r3?.count ?? .max) <= big.count, "\(String(describing: try? FrameDecoder(receiver: .client).decodeAll(r3 ?? [])))")
        // Seeded garbage and mutated frames of every size: every reply no larger than its request.
        var rng = SeededGenerator(seed: 7)
        let valid = try checksummed(Frame(requestID: 8, body: .entryBatch(raffleID: raffle, entries: (1...10).map { Entry(userID: $0 + 5_000) })))
        for i in 0..<300 {
            var d: [UInt8]
            if i % 2 == 0 {
                d = (0..<Int.random(in: 0...1_300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            } else {
                d = valid
                for _ in 0..<Int.random(in: 1...4, using: &rng) { d[Int.random(in: 0..<d.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng) }
                d = Array(d.prefix(Int.random(in: 0...d.count, using: &rng)))
            }
            u.send(d)
            while let reply = u.receive() {
                #expect(reply.count <= d.count && reply.count >= 28, "a \(reply.count)-byte reply to a \(d.count)-byte datagram")
                break
            }
        }
        // The server is still there: a fresh valid batch (a new request id, so no late reply to the
        // garbage can be mistaken for its answer) is acknowledged and stored.
        let fresh = try checksummed(Frame(requestID: 9_999, body: .entryBatch(raffleID: raffle, entries: (1...10).map { Entry(userID: $0 + 7_000) })))
        var ack: Frame?
        for _ in 0..<3 where ack == nil {
            ack = (try? FrameDecoder(receiver: .client).decodeAll(u.exchange(fresh) ?? []))?.first { $0.outcomes != nil }
        }
        #expect(ack?.outcomes == Array(repeating: .accepted, count: 10), "\(String(describing: ack))")
        #expect(try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self).entries >= 10)
        await f.stop()
    }

    /// Error replies are limited per source (20 at once, 10 a second): a garbage flood is read and
    /// dropped, not answered; acks to good batches go on; once the allowance refills, errors are
    /// answered again.
    @Test func errorRepliesAreLimitedPerSource() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let u = DatagramSocket(port: try #require(f.server.udpPort))
        let plain = batchFrame(raffle: raffle, users: [1, 2], requestID: 5)  // no checksum: an error
        for _ in 0..<100 { u.send(plain) }
        var answered = 0
        while u.receive() != nil { answered += 1 }
        #expect(answered >= 20 && answered <= 25, "the burst of error replies, then silence (\(answered))")
        let good = try checksummed(Frame(requestID: 77, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 9)])))
        let ack = try FrameDecoder(receiver: .client).decodeAll(u.exchange(good) ?? []).first
        #expect(ack?.outcomes == [.accepted], "a good batch from the same source is still acknowledged")
        try await Task.sleep(for: .milliseconds(400))  // ~4 error replies' worth refilled
        #expect(u.exchange(plain) != nil, "errors are answered again once the allowance refills")
        let metrics = String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
        #expect(metrics.contains(#"raffled_udp_datagrams_total{result="dropped"}"#))
        await f.stop()
    }

    @Test func sendersAreThrottledPerSourceAddress() async throws {
        let f = try await ServerFixture.start { $0.admission.anonymous = RateLimit(ratePerSecond: 10, burst: 6) }
        let raffle = try await f.createRaffle()
        let u = DatagramSocket(port: try #require(f.server.udpPort))
        var throttled = 0
        for k in UInt64(0)..<5 {
            let reply = u.exchange(try checksummed(Frame(requestID: k + 1, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: k + 1), Entry(userID: k + 100)]))))
            if case .throttled(let ms, _) = try FrameDecoder(receiver: .client).decodeAll(reply ?? []).first?.body {
                throttled += 1
                #expect(ms > 0)
            }
        }
        #expect(throttled >= 2, "a burst of 6 admits two batches of cost 3, then throttles")
        await f.stop()
    }

    @Test func oneAddressGetsOneLimitWhicheverLoopItsPortsReach() async throws {
        // Two loops, two sockets on one port (SO_REUSEPORT): the kernel spreads source ports over them.
        let f = try await ServerFixture.start {
            $0.eventLoops = 2
            $0.admission.anonymous = RateLimit(ratePerSecond: 1, burst: 10)
        }
        let raffle = try await f.createRaffle()
        let port = try #require(f.server.udpPort)
        var acked = 0
        for k in UInt64(1)...40 {  // 40 source ports of 127.0.0.1, one batch of cost 2 each
            let u = DatagramSocket(port: port)
            let reply = u.exchange(try checksummed(Frame(requestID: k, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: k)]))))
            if (try FrameDecoder(receiver: .client).decodeAll(reply ?? []).first?.outcomes) != nil { acked += 1 }
        }
        // A burst of 10 admits 5 batches of cost 2 (plus at most a couple from refill while the test
        // runs); per-loop buckets admitted 5 per loop.
        #expect(acked >= 5 && acked <= 7, "\(acked) batches admitted from one address")
        await f.stop()
    }

    @Test func everyReplyToAChecksummedRequestCarriesAChecksum() async throws {
        let f = try await ServerFixture.start { $0.admission.anonymous = RateLimit(ratePerSecond: 10, burst: 6) }
        let raffle = try await f.createRaffle()
        let u = DatagramSocket(port: try #require(f.server.udpPort))
        let strict = FrameDecoder(receiver: .client, requireChecksum: true)
        let unknown = u.exchange(try checksummed(Frame(requestID: 1, body: .entryBatch(raffleID: raffle + 99, entries: [Entry(userID: 1)]))))
        let r1 = try strict.decodeAll(try #require(unknown))
        #expect(r1.first?.errorCode == .unknownRaffle && r1.first?.flags.contains(.checksum) == true)
        let huge = u.exchange(try checksummed(Frame(requestID: 2, body: .entryBatch(raffleID: raffle, entries: (1...10).map { Entry(userID: $0) }))))
        let r2 = try strict.decodeAll(try #require(huge))
        #expect(r2.first?.errorCode == .batchExceedsBurst && r2.first?.flags.contains(.checksum) == true)
        await f.stop()
    }

    @Test func anOversizeDatagramWithAnUnreadableHeaderIsAnsweredWithRequestIDZero() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle()
        let u = DatagramSocket(port: try #require(f.server.udpPort))
        var big = try checksummed(Frame(requestID: 77, body: .entryBatch(raffleID: raffle, entries: (1...100).map { Entry(userID: $0) })))
        big[0] = 0x58  // not "RF": the header cannot be read, so its request id means nothing
        u.send(big)
        let reply = try FrameDecoder(receiver: .client).decodeAll(try #require(u.receive()))
        #expect(reply.first?.errorCode == .frameTooLarge && reply.first?.requestID == 0)
        await f.stop()
    }
}
