/// The outcome of one entry in a batch ack: one byte per entry, in batch order. Open: a client
/// receiving a value it does not know treats the entry as not accepted.
public struct EntryOutcome: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Stored durably; this user now holds an entry in the raffle.
    public static let accepted = EntryOutcome(rawValue: 0)
    /// The user already had an entry (from an earlier request or earlier in this batch). Not counted
    /// again; a retry of an accepted entry ends here, which is harmless.
    public static let alreadyEntered = EntryOutcome(rawValue: 1)
    /// The raffle exists but has not opened yet.
    public static let raffleNotOpen = EntryOutcome(rawValue: 2)
    /// The raffle has closed.
    public static let raffleClosed = EntryOutcome(rawValue: 3)
    /// The user id is 0.
    public static let invalidUserID = EntryOutcome(rawValue: 4)
    /// Tickets is 0 or above the raffle's maximum tickets per user.
    public static let invalidTickets = EntryOutcome(rawValue: 5)
    /// The entry's reserved word is not zero.
    public static let invalidReserved = EntryOutcome(rawValue: 6)

    /// Whether the entry is (now or already) in the raffle: accepted or already entered.
    public var isEntered: Bool { self == .accepted || self == .alreadyEntered }

    /// Whether resending the same entry could change the outcome (not open yet).
    public var isRetryable: Bool { self == .raffleNotOpen }

    /// The snake_case name used in PROTOCOL.md and the vectors, or `outcome_N` if undefined.
    public var description: String {
        switch rawValue {
        case 0: "accepted"
        case 1: "already_entered"
        case 2: "raffle_not_open"
        case 3: "raffle_closed"
        case 4: "invalid_user_id"
        case 5: "invalid_tickets"
        case 6: "invalid_reserved"
        default: "outcome_\(rawValue)"
        }
    }

    /// The outcome with the given name (`accepted`, …, or `outcome_N`), if any.
    public init?(name: String) {
        for raw in UInt8(0)...6 where EntryOutcome(rawValue: raw).description == name {
            self.init(rawValue: raw)
            return
        }
        guard name.hasPrefix("outcome_"), let raw = UInt8(name.dropFirst("outcome_".count)) else { return nil }
        self.init(rawValue: raw)
    }
}
