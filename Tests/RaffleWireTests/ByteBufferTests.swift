import NIOCore
import RaffleWire
import RaffleWireNIO
import Testing

@Suite("Frames through a ByteBuffer, as a stream transport reads them")
struct ByteBufferTests {
    let frames: [Frame] = [
        Frame(requestID: 1, body: .entryBatch(raffleID: 7, entries: [Entry(userID: 10), Entry(userID: 11, tickets: 3)])),
        Frame(requestID: 2, flags: .checksum, body: .ping(0xDEAD_BEEF)),
        Frame(requestID: 3, body: .entryBatch(raffleID: 8, entries: (1...100).map { Entry(userID: $0) })),
    ]

    @Test func pipelinedFramesFedOneByteAtATime() throws {
        var wire = ByteBuffer()
        for frame in frames { wire.writeRaffleFrame(frame) }
        var input = ByteBuffer()
        var decoded: [Frame] = []
        let decoder = FrameDecoder(receiver: .server)
        while let byte = wire.readInteger(as: UInt8.self) {
            input.writeInteger(byte)
            while let frame = try input.readRaffleFrame(using: decoder, { Frame($0) }) { decoded.append(frame) }
        }
        #expect(decoded == frames)
        #expect(input.readableBytes == 0)
    }

    @Test func frameLevelErrorSkipsOnlyTheBadFrame() throws {
        var input = ByteBuffer()
        input.writeRaffleFrame(frames[0])
        // An ack sent to a server: well framed, wrong direction.
        input.writeRaffleFrame(Frame(requestID: 9, body: .batchAck(raffleID: 7, outcomes: [.accepted])))
        input.writeRaffleFrame(frames[2])
        let decoder = FrameDecoder(receiver: .server)
        #expect(try input.readRaffleFrame(using: decoder, { Frame($0) }) == frames[0])
        #expect {
            try input.readRaffleFrame(using: decoder, { Frame($0) })
        } throws: { ($0 as? ProtocolError)?.code == .unexpectedFrameType && ($0 as? ProtocolError)?.requestID == 9 }
        #expect(try input.readRaffleFrame(using: decoder, { Frame($0) }) == frames[2])
    }

    @Test func oversizedFrameIsRefusedFromItsHeaderAlone() throws {
        var input = ByteBuffer()
        // Header only: 1 MiB payload announced against the default 65,552-byte limit.
        input.writeBytes([0x52, 0x46, 0x01, 0x01, 0, 0, 0, 0])
        input.writeInteger(UInt32(1 << 20), endianness: .little)
        input.writeInteger(UInt64(42), endianness: .little)
        input.writeInteger(UInt32(0))
        #expect(throws: ProtocolError.self) { try input.peekRaffleFrameHeader(using: FrameDecoder()) }
        let before = input.readerIndex
        #expect {
            try input.readRaffleFrame(using: FrameDecoder(), { _ in () })
        } throws: { ($0 as? ProtocolError)?.code == .frameTooLarge && ($0 as? ProtocolError)?.isConnectionLevel == true }
        #expect(input.readerIndex == before, "a connection-level error consumes nothing")
    }

    @Test func batchAckWrittenFromOutcomesDecodesBack() throws {
        var buffer = ByteBuffer()
        let outcomes: [EntryOutcome] = [.accepted, .alreadyEntered, .invalidTickets, .accepted]
        outcomes.withUnsafeBufferPointer { _ = buffer.writeBatchAck(requestID: 5, raffleID: 77, outcomes: $0, flags: .checksum) }
        let frame = try buffer.readRaffleFrame(using: FrameDecoder(receiver: .client), { Frame($0) })
        #expect(frame == Frame(requestID: 5, flags: .checksum, body: .batchAck(raffleID: 77, outcomes: outcomes)))
    }
}
