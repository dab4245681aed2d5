// Fuzz target: the frame decoder on arbitrary bytes, as a server and as a client reads them. Every
// input must end in frames or typed errors — never a trap, never a read past the input.
import RaffleFuzzSupport
import RaffleWire

let server = FrameDecoder(receiver: .server)
let client = FrameDecoder(receiver: .client)

func fuzz(_ bytes: UnsafeRawBufferPointer) {
    for decoder in [server, client] {
        var rest = bytes
        while !rest.isEmpty {
            do {
                guard let frame = try decoder.decode(rest) else { break }
                if case .entryBatch(let batch) = frame.payload {
                    var tickets: UInt64 = 0
                    for i in 0..<batch.count { tickets &+= UInt64(batch.tickets(at: i)) &+ batch.userID(at: i) }
                    _ = tickets
                }
                precondition(frame.frameLength > 0 && frame.frameLength <= rest.count, "a frame's length is within its input")
                rest = UnsafeRawBufferPointer(rebasing: rest[frame.frameLength...])
            } catch {
                guard let skip = error.skippableLength else { break }
                precondition(skip > 0 && skip <= rest.count, "a skippable error stays within its input")
                rest = UnsafeRawBufferPointer(rebasing: rest[skip...])
            }
        }
    }
}

FuzzMain.run(fuzz)
