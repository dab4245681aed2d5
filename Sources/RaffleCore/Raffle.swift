/// What an operator supplies to create a raffle. Times are milliseconds since the Unix epoch (UTC).
public struct RaffleSpec: Codable, Hashable, Sendable {
    /// A title for people.
    public var title: String
    /// Entries before this time get `raffle_not_open`. Default: now.
    public var opensAt: Int64
    /// Entries from this time get `raffle_closed`, and the raffle is closed and drawn.
    public var closesAt: Int64
    /// How many winners to draw (without replacement). At least 1.
    public var winners: Int
    /// The most tickets one user may ask for. Default 1.
    public var maxTicketsPerUser: UInt32

    /// Creates a spec.
    public init(title: String, opensAt: Int64, closesAt: Int64, winners: Int = 1, maxTicketsPerUser: UInt32 = 1) {
        self.title = title
        self.opensAt = opensAt
        self.closesAt = closesAt
        self.winners = winners
        self.maxTicketsPerUser = maxTicketsPerUser
    }

    /// Why the spec cannot be used, or nil if it can.
    public var problem: String? {
        if title.isEmpty || title.utf8.count > 200 { return "title must be 1 to 200 bytes" }
        if closesAt <= opensAt { return "closesAt must be after opensAt" }
        if winners < 1 || winners > 1_000_000 { return "winners must be 1 to 1,000,000" }
        if maxTicketsPerUser < 1 || maxTicketsPerUser > 1_000_000 { return "maxTicketsPerUser must be 1 to 1,000,000" }
        return nil
    }
}

/// Where a raffle is in its life.
public enum RaffleState: String, Codable, Sendable {
    /// Created, not open yet.
    case scheduled
    /// Taking entries.
    case open
    /// Closed and drawn: the seed and winners are published.
    case drawn
}

/// The published result of a draw: everything needed to verify it.
public struct DrawResult: Codable, Hashable, Sendable {
    /// When the raffle closed (ms since the epoch).
    public var closedAt: Int64
    /// SHA-256 (hex) of the canonical entry list (see `Draw`).
    public var entryListHash: String
    /// The secret seed, revealed (hex, 32 bytes). `SHA-256(seed)` equals the raffle's commitment.
    public var seed: String
    /// Number of entries and tickets that took part.
    public var entries: Int
    public var tickets: UInt64
    /// Winning user ids, in draw order.
    public var winners: [UInt64]

    /// Creates a result.
    public init(closedAt: Int64, entryListHash: String, seed: String, entries: Int, tickets: UInt64, winners: [UInt64]) {
        self.closedAt = closedAt
        self.entryListHash = entryListHash
        self.seed = seed
        self.entries = entries
        self.tickets = tickets
        self.winners = winners
    }
}

/// A raffle as the API shows it.
public struct RaffleInfo: Codable, Hashable, Sendable {
    /// The raffle id used in entry batches.
    public var id: UInt64
    /// The definition.
    public var spec: RaffleSpec
    /// SHA-256 (hex) of the secret seed, published at creation.
    public var seedCommitment: String
    /// State at the time of the call.
    public var state: RaffleState
    /// Entries and tickets stored so far.
    public var entries: Int
    public var tickets: UInt64
    /// Present once drawn.
    public var draw: DrawResult?

    /// Creates an info value.
    public init(
        id: UInt64, spec: RaffleSpec, seedCommitment: String, state: RaffleState, entries: Int, tickets: UInt64,
        draw: DrawResult?
    ) {
        self.id = id
        self.spec = spec
        self.seedCommitment = seedCommitment
        self.state = state
        self.entries = entries
        self.tickets = tickets
        self.draw = draw
    }
}
