import RaffleTestSupport
import RaffleWire
import Testing

@Suite("Round trips and robustness (seeded)")
struct PropertyTests {
    static func randomBody(_ rng: inout SeededGenerator) -> Frame.Body {
        switch Int.random(in: 0..<6, using: &rng) {
        case 0:
            let n = Bool.random(using: &rng) ? Int.random(in: 1...8, using: &rng) : Int.random(in: 1...4_096, using: &rng)
            let entries = (0..<n).map { _ in
                Entry(userID: UInt64.random(in: 1...UInt64.max, using: &rng), tickets: UInt32.random(in: 1...100, using: &rng))
            }
            return .entryBatch(raffleID: UInt64.random(in: 1...UInt64.max, using: &rng), entries: entries)
        case 1:
            let n = Int.random(in: 0...2_000, using: &rng)
            let outcomes = (0..<n).map { _ in EntryOutcome(rawValue: UInt8.random(in: 0...6, using: &rng)) }
            return .batchAck(raffleID: rng.next(), outcomes: outcomes)
        case 2:
            return .throttled(
                retryAfterMilliseconds: UInt32.random(in: 0...UInt32.max, using: &rng),
                reason: ThrottleReason(rawValue: UInt16.random(in: 1...3, using: &rng)))
        case 3:
            let scalars = (0..<Int.random(in: 0...600, using: &rng)).map { _ in
                Character(Unicode.Scalar(UInt8.random(in: 0x20...0x7E, using: &rng)))
            }
            let code = ProtocolErrorCode.allDefined.randomElement(using: &rng) ?? .internalError
            return .error(code: code, message: String(scalars) + (Bool.random(using: &rng) ? "é🎟" : ""))
        case 4:
            return .ping(rng.next())
        default:
            return .pong(rng.next())
        }
    }

    @Test func randomFramesRoundTrip() throws {
        var rng = SeededGenerator(seed: 0x5241_4646_4C45_4421)
        let decoder = FrameDecoder()
        for _ in 0..<2_000 {
            let frame = Frame(
                requestID: rng.next(), flags: Bool.random(using: &rng) ? [.checksum] : [], body: Self.randomBody(&rng))
            let bytes = try FrameEncoder.encode(frame)
            #expect(bytes.count == FrameEncoder.encodedLength(of: frame))
            let decoded = try #require(try decodeOwned(bytes, decoder))
            #expect(decoded.0 == frame)
            #expect(decoded.1 == bytes.count)
        }
    }

    @Test func batchAckFromOutcomeBufferMatchesFrameEncoding() throws {
        var rng = SeededGenerator(seed: 7)
        for _ in 0..<200 {
            let outcomes = (0..<Int.random(in: 0...300, using: &rng)).map { _ in EntryOutcome(rawValue: UInt8.random(in: 0...6, using: &rng)) }
            let id = rng.next()
            let raffle = rng.next()
            let flags: FrameFlags = Bool.random(using: &rng) ? [.checksum] : []
            let viaFrame = try FrameEncoder.encode(Frame(requestID: id, flags: flags, body: .batchAck(raffleID: raffle, outcomes: outcomes)))
            var direct = [UInt8](repeating: 0, count: viaFrame.count + 3)
            let written = outcomes.withUnsafeBufferPointer { o in
                direct.withUnsafeMutableBytes {
                    FrameEncoder.encodeBatchAck(requestID: id, raffleID: raffle, outcomes: o, flags: flags, into: $0)
                }
            }
            #expect(written == viaFrame.count)
            #expect(Array(direct.prefix(written)) == viaFrame)
        }
    }

    @Test func encoderRefusesTooSmallBuffers() {
        let frame = Frame(requestID: 1, body: .entryBatch(raffleID: 1, entries: [Entry(userID: 1)]))
        var small = [UInt8](repeating: 0xAA, count: FrameEncoder.encodedLength(of: frame) - 1)
        let written = small.withUnsafeMutableBytes { FrameEncoder.encode(frame, into: $0) }
        #expect(written == 0)
        #expect(small.allSatisfy { $0 == 0xAA }, "nothing is written when the buffer is too small")
    }

    @Test func longErrorMessagesAreCutAtAScalarBoundary() throws {
        let message = String(repeating: "a", count: 1_023) + "é" + String(repeating: "b", count: 50)
        let bytes = try FrameEncoder.encode(Frame(requestID: 3, body: .error(code: .internalError, message: message)))
        let decoded = try #require(try decodeOwned(bytes, FrameDecoder()))
        guard case .error(_, let cut) = decoded.0.body else { Issue.record("not an error frame"); return }
        #expect(cut == String(repeating: "a", count: 1_023), "the 2-byte é does not fit in 1,024 bytes")
    }

    @Test func hundredThousandRandomInputsNeverTrap() {
        var rng = SeededGenerator(seed: 0xF022)
        let decoders = [
            FrameDecoder(), FrameDecoder(receiver: .server), FrameDecoder(receiver: .client),
            FrameDecoder(limits: .datagram(), requireChecksum: true),
        ]
        let seeds = Vector.valid.map(\.bytes)
        var outcomes = [String: Int]()
        for i in 0..<100_000 {
            var bytes: [UInt8]
            switch i % 3 {
            case 0:  // pure noise
                bytes = (0..<Int.random(in: 0...96, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            case 1:  // a valid header start, random rest: reaches the payload checks
                bytes = [0x52, 0x46, 0x01, UInt8.random(in: 0...8, using: &rng)]
                bytes += (0..<Int.random(in: 0...120, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
                if bytes.count >= 12, Bool.random(using: &rng) {
                    let length = UInt32(max(bytes.count - 24, 0)) &+ UInt32.random(in: 0...2, using: &rng)
                    withUnsafeBytes(of: length.littleEndian) { for k in 0..<4 { bytes[8 + k] = $0[k] } }
                    bytes[6] = 0
                    bytes[7] = 0
                }
            default:  // a valid vector with a few bytes changed
                bytes = seeds.randomElement(using: &rng) ?? []
                for _ in 0..<Int.random(in: 1...3, using: &rng) where !bytes.isEmpty {
                    bytes[Int.random(in: 0..<bytes.count, using: &rng)] = UInt8.random(in: 0...255, using: &rng)
                }
            }
            let decoder = decoders[i % decoders.count]
            do {
                if let (frame, length) = try decodeOwned(bytes, decoder, endOfInput: Bool.random(using: &rng)) {
                    #expect(length <= bytes.count)
                    #expect(frame.requestID == bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: 12, as: UInt64.self) })
                    outcomes["decoded", default: 0] += 1
                } else {
                    outcomes["need more", default: 0] += 1
                }
            } catch {
                #expect(!error.message.isEmpty)
                if let skip = error.skippableLength { #expect(skip >= Wire.headerSize && skip <= bytes.count) }
                outcomes[error.code.description, default: 0] += 1
            }
        }
        // The corpus must reach deep into the decoder, not stop at the magic.
        #expect(outcomes["decoded", default: 0] > 100)
        #expect(outcomes.keys.count >= 10, "\(outcomes)")
    }
}

@Suite struct CRC32CTests {
    @Test func checkValue() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8]()) == 0)
    }

    @Test func hardwareAndPortableAgreeAndChain() {
        var rng = SeededGenerator(seed: 99)
        for _ in 0..<300 {
            let bytes = (0..<Int.random(in: 0...300, using: &rng)).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let split = Int.random(in: 0...bytes.count, using: &rng)
            bytes.withUnsafeBytes { raw in
                let whole = CRC32C.extend(0, raw)
                #expect(whole == CRC32C.extendPortable(0, raw))
                let chained = CRC32C.extend(
                    CRC32C.extend(0, UnsafeRawBufferPointer(rebasing: raw[..<split])), UnsafeRawBufferPointer(rebasing: raw[split...]))
                #expect(chained == whole)
            }
        }
    }
}
