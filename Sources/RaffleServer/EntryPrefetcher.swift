import RaffleLedger
import RaffleWire

/// Looks ahead in the bytes of one read for entry batches, before nghttp2 parses them, and gives
/// each to `Ledger.prefetch`: nghttp2 hands the DATA frames of a read over one after another, and
/// each is admitted as soon as its body arrives, so a single-entry request's dedupe-index insert
/// used to wait for memory on the spot (~6 % of the server's time on the single-entry path). Hinted
/// for the whole read first, the slots of later requests load while earlier ones are processed
/// (Bench/RESULTS.md, issue #15 item 3, point 4: `admit` 9.6 % → 4.8 % of the samples, this 2.7 %).
///
/// Only a hint: it walks HTTP/2 frame headers (9 bytes: 24-bit length, type, flags, stream id) from
/// the start of the connection (after the client preface), carries a header cut by the end of a
/// read into the next one, and peeks into DATA payloads that hold a whole entries frame. It never
/// changes what nghttp2 sees, and whatever it makes of bad input, nghttp2 and the entry path judge
/// the same bytes as before. No allocation per read (the carry keeps its capacity).
struct EntryPrefetcher {
    /// Bytes still to pass over: the rest of a frame (or the client preface) begun in an earlier read.
    private var skip = ProtocolSelector.preface.count
    /// The start of a frame header cut by the end of the previous read (fewer than 9 bytes).
    private var carry: [UInt8] = []

    init() { carry.reserveCapacity(9) }

    mutating func scan(_ bytes: UnsafeRawBufferPointer, decoder: FrameDecoder, ledger: any Ledger) {
        scan(bytes, decoder: decoder) { ledger.prefetch($0) }
    }

    /// Calls `hint` with each whole entries frame found in DATA frames (the seam the tests use).
    mutating func scan(_ bytes: UnsafeRawBufferPointer, decoder: FrameDecoder, hint: (EntryBatchView) -> Void) {
        var offset = 0
        if !carry.isEmpty {
            let need = 9 - carry.count
            guard bytes.count >= need else {
                carry.append(contentsOf: bytes)
                return
            }
            carry.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[0..<need]))
            // That frame's payload began in this read right after its header: passed over, not peeked.
            skip = Int(carry[0]) << 16 | Int(carry[1]) << 8 | Int(carry[2])
            carry.removeAll(keepingCapacity: true)
            offset = need
        }
        guard bytes.count - offset >= skip else {
            skip -= bytes.count - offset
            return
        }
        offset += skip
        skip = 0
        while bytes.count - offset >= 9 {
            let length = Int(bytes[offset]) << 16 | Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2])
            let type = bytes[offset + 3]
            let flags = bytes[offset + 4]
            let start = offset + 9
            guard bytes.count - start >= length else {
                skip = length - (bytes.count - start)
                return
            }
            if type == 0 && length > 0 {  // DATA
                peek(UnsafeRawBufferPointer(rebasing: bytes[start..<(start + length)]), padded: flags & 0x8 != 0, decoder, hint)
            }
            offset = start + length
        }
        carry.append(contentsOf: UnsafeRawBufferPointer(rebasing: bytes[offset...]))
    }

    /// DATA payloads longer than this are not looked into: a bulk batch's `admit` prefetches its own
    /// index slots as it goes, and decoding it twice (its checksum too) would be wasted work.
    static let largestPeek = 1_024

    private func peek(_ payload: UnsafeRawBufferPointer, padded: Bool, _ decoder: FrameDecoder, _ hint: (EntryBatchView) -> Void) {
        guard payload.count <= Self.largestPeek else { return }
        var body = payload
        if padded {
            let padding = Int(payload[0])
            guard padding < payload.count else { return }
            body = UnsafeRawBufferPointer(rebasing: payload[1..<(payload.count - padding)])
        }
        // Whole entries frames only (`decode` is nil for a frame cut short); errors are the entry
        // path's to report, from the same bytes.
        guard let frame = try? decoder.decode(body), case .entryBatch(let batch) = frame.payload else { return }
        hint(batch)
    }
}
