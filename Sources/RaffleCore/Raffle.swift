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
    /// How many entries the operator expects (nil: not said). A server sizes the raffle's duplicate
    /// index and entry list for this many at creation, so a drop never waits for them to double
    /// mid-spike (the index costs ~21 bytes per expected entry up front). A hint, not a limit: more
    /// entries are taken as usual. 0 to 100,000,000.
    public var expectedEntries: Int?

    /// Creates a spec.
    public init(
        title: String, opensAt: Int64, closesAt: Int64, winners: Int = 1, maxTicketsPerUser: UInt32 = 1, expectedEntries: Int? = nil
    ) {
        self.title = title
        self.opensAt = opensAt
        self.closesAt = closesAt
        self.winners = winners
        self.maxTicketsPerUser = maxTicketsPerUser
        self.expectedEntries = expectedEntries
    }

    /// The most `expectedEntries` a spec may give.
    public static let maxExpectedEntries = 100_000_000

    /// Why the spec cannot be used, or nil if it can.
    public var problem: String? {
        if title.isEmpty || title.utf8.count > 200 { return "title must be 1 to 200 bytes" }
        if closesAt <= opensAt { return "closesAt must be after opensAt" }
        if winners < 1 || winners > 1_000_000 { return "winners must be 1 to 1,000,000" }
        if maxTicketsPerUser < 1 || maxTicketsPerUser > 1_000_000 { return "maxTicketsPerUser must be 1 to 1,000,000" }
        if let n = expectedEntries, n < 0 || n > Self.maxExpectedEntries { return "expectedEntries must be 0 to 100,000,000" }
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

/// 64-bit ids in the JSON API are decimal strings: a JSON number loses precision above 2^53 in
/// JavaScript and other readers that use doubles. Numbers are still accepted on input (for this
/// version; PROTOCOL.md §11 says so).
public enum JSONID {
    /// Reads an id written as a decimal string or a number.
    public static func decode<Key: CodingKey>(_ container: KeyedDecodingContainer<Key>, _ key: Key) throws -> UInt64 {
        if let text = try? container.decode(String.self, forKey: key) {
            guard let value = UInt64(text) else {
                throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "\(text) is not a 64-bit unsigned id")
            }
            return value
        }
        return try container.decode(UInt64.self, forKey: key)
    }

    /// Reads a list of ids, each a decimal string or a number.
    public static func decodeList<Key: CodingKey>(_ container: KeyedDecodingContainer<Key>, _ key: Key) throws -> [UInt64] {
        if let texts = try? container.decode([String].self, forKey: key) {
            return try texts.map { text in
                guard let value = UInt64(text) else {
                    throw DecodingError.dataCorruptedError(forKey: key, in: container, debugDescription: "\(text) is not a 64-bit unsigned id")
                }
                return value
            }
        }
        return try container.decode([UInt64].self, forKey: key)
    }
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

    private enum CodingKeys: String, CodingKey {
        case closedAt, entryListHash, seed, entries, tickets, winners
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        closedAt = try c.decode(Int64.self, forKey: .closedAt)
        entryListHash = try c.decode(String.self, forKey: .entryListHash)
        seed = try c.decode(String.self, forKey: .seed)
        entries = try c.decode(Int.self, forKey: .entries)
        tickets = try c.decode(UInt64.self, forKey: .tickets)
        winners = try JSONID.decodeList(c, .winners)
    }

    /// Winners are written as decimal strings (see `JSONID`).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(closedAt, forKey: .closedAt)
        try c.encode(entryListHash, forKey: .entryListHash)
        try c.encode(seed, forKey: .seed)
        try c.encode(entries, forKey: .entries)
        try c.encode(tickets, forKey: .tickets)
        try c.encode(winners.map(String.init), forKey: .winners)
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

    private enum CodingKeys: String, CodingKey {
        case id, spec, seedCommitment, state, entries, tickets, draw
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try JSONID.decode(c, .id)
        spec = try c.decode(RaffleSpec.self, forKey: .spec)
        seedCommitment = try c.decode(String.self, forKey: .seedCommitment)
        state = try c.decode(RaffleState.self, forKey: .state)
        entries = try c.decode(Int.self, forKey: .entries)
        tickets = try c.decode(UInt64.self, forKey: .tickets)
        draw = try c.decodeIfPresent(DrawResult.self, forKey: .draw)
    }

    /// The id is written as a decimal string (see `JSONID`).
    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(String(id), forKey: .id)
        try c.encode(spec, forKey: .spec)
        try c.encode(seedCommitment, forKey: .seedCommitment)
        try c.encode(state, forKey: .state)
        try c.encode(entries, forKey: .entries)
        try c.encode(tickets, forKey: .tickets)
        try c.encodeIfPresent(draw, forKey: .draw)
    }
}
