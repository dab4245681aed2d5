/// One fixed-size entry record: 16 bytes on the wire.
///
/// ```
/// offset size field
///  0     8    user id (non-zero)
///  8     4    tickets (1 … the raffle's max tickets per user)
/// 12     4    reserved (0)
/// ```
public struct Entry: Hashable, Sendable {
    /// The entrant; 0 is invalid.
    public var userID: UInt64
    /// Tickets this user asks for; weights the draw.
    public var tickets: UInt32
    /// Must be 0 in version 1; kept so a decoded frame re-encodes to the same bytes.
    public var reserved: UInt32

    /// Creates an entry.
    public init(userID: UInt64, tickets: UInt32 = 1, reserved: UInt32 = 0) {
        self.userID = userID
        self.tickets = tickets
        self.reserved = reserved
    }
}

/// The entries of an entry-batch frame, read in place by offset arithmetic: no copy, no allocation.
/// Valid only while the bytes it was decoded from are alive and unchanged; do not let it escape the
/// closure that lent those bytes.
public struct EntryBatchView: RandomAccessCollection {
    /// The raffle every entry in the batch is for.
    public let raffleID: UInt64
    /// The entry records, `count × 16` bytes.
    public let records: UnsafeRawBufferPointer

    @inlinable public var startIndex: Int { 0 }
    @inlinable public var endIndex: Int { records.count &>> 4 }

    /// The entry at `position`, which must be in `indices`.
    @inlinable
    public subscript(position: Int) -> Entry {
        let o = position &<< 4
        return Entry(
            userID: UInt64(littleEndian: records.loadUnaligned(fromByteOffset: o, as: UInt64.self)),
            tickets: UInt32(littleEndian: records.loadUnaligned(fromByteOffset: o + 8, as: UInt32.self)),
            reserved: UInt32(littleEndian: records.loadUnaligned(fromByteOffset: o + 12, as: UInt32.self))
        )
    }

    /// The user id of the entry at `position` (in `indices`), without reading the rest.
    @inlinable
    public func userID(at position: Int) -> UInt64 {
        UInt64(littleEndian: records.loadUnaligned(fromByteOffset: position &<< 4, as: UInt64.self))
    }

    /// The ticket count of the entry at `position` (in `indices`).
    @inlinable
    public func tickets(at position: Int) -> UInt32 {
        UInt32(littleEndian: records.loadUnaligned(fromByteOffset: (position &<< 4) + 8, as: UInt32.self))
    }

    /// Checks every entry's fields and writes one outcome per entry into `outcomes`: `.accepted` for
    /// a record that is valid (to be confirmed by the ledger), else `.invalidUserID` (user id 0),
    /// `.invalidTickets` (0 or above `maxTicketsPerEntry`) or `.invalidReserved`, checked in that
    /// order. Processes `min(count, outcomes.count)` entries; returns how many were valid.
    /// Allocation-free; a few instructions per entry.
    @inlinable
    public func validate(maxTicketsPerEntry: UInt32, into outcomes: UnsafeMutableBufferPointer<EntryOutcome>) -> Int {
        let n = Swift.min(count, outcomes.count)
        var valid = 0
        var o = 0
        for i in 0..<n {
            let user = records.loadUnaligned(fromByteOffset: o, as: UInt64.self)
            let tickets = UInt32(littleEndian: records.loadUnaligned(fromByteOffset: o + 8, as: UInt32.self))
            let reserved = records.loadUnaligned(fromByteOffset: o + 12, as: UInt32.self)
            let outcome: EntryOutcome
            if user == 0 {
                outcome = .invalidUserID
            } else if tickets == 0 || tickets > maxTicketsPerEntry {
                outcome = .invalidTickets
            } else if reserved != 0 {
                outcome = .invalidReserved
            } else {
                outcome = .accepted
                valid &+= 1
            }
            outcomes[i] = outcome
            o &+= 16
        }
        return valid
    }
}

/// The outcomes of a batch-ack frame, read in place.
public struct BatchAckView: RandomAccessCollection {
    /// The raffle the acknowledged batch was for.
    public let raffleID: UInt64
    /// How many outcomes are `.accepted` (checked against the bytes by the decoder).
    public let acceptedCount: Int
    /// One byte per entry.
    public let outcomeBytes: UnsafeRawBufferPointer

    public var startIndex: Int { 0 }
    public var endIndex: Int { outcomeBytes.count }
    /// The outcome of the entry at `position` (in `indices`).
    public subscript(position: Int) -> EntryOutcome { EntryOutcome(rawValue: outcomeBytes[position]) }
}

/// An error frame's payload, read in place.
public struct ErrorView {
    /// The error code.
    public let code: ProtocolErrorCode
    /// The UTF-8 message bytes (at most 1,024).
    public let messageBytes: UnsafeRawBufferPointer
    /// The message, with invalid UTF-8 replaced by U+FFFD.
    public var message: String { String(decoding: messageBytes, as: UTF8.self) }
}

/// A decoded frame's payload, by type.
public enum FramePayloadView {
    /// An entry batch.
    case entryBatch(EntryBatchView)
    /// A batch ack.
    case batchAck(BatchAckView)
    /// Throttled: retry after this many milliseconds.
    case throttled(retryAfterMilliseconds: UInt32, reason: ThrottleReason)
    /// An error report.
    case error(ErrorView)
    /// A ping's 8 opaque bytes, read as a little-endian integer.
    case ping(UInt64)
    /// A pong's 8 bytes (the ping's, echoed).
    case pong(UInt64)
}

/// A frame decoded in place: its header and a typed view of its payload. Borrowed from the bytes it
/// was decoded from; see `EntryBatchView`.
public struct FrameView {
    /// The header.
    public let header: FrameHeader
    /// The payload, by type.
    public let payload: FramePayloadView
    /// Header plus payload: how far to advance past this frame.
    public var frameLength: Int { header.frameLength }
}
