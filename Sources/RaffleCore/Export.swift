import Foundation

/// Entry exports, in canonical order (by user id): what `raffle verify` reads.
public enum Export {
    /// `user_id,tickets` lines after a header line.
    public static func csv(_ entries: [Draw.Entry]) -> [UInt8] {
        var out = Array("user_id,tickets\n".utf8)
        out.reserveCapacity(entries.count * 16 + 16)
        for e in entries {
            out.append(contentsOf: String(e.userID).utf8)
            out.append(0x2C)
            out.append(contentsOf: String(e.tickets).utf8)
            out.append(0x0A)
        }
        return out
    }

    /// One `{"userId":"N","tickets":N}` object per line (the id a decimal string: `JSONID`).
    public static func ndjson(_ entries: [Draw.Entry]) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(entries.count * 32)
        for e in entries {
            out.append(contentsOf: "{\"userId\":\"\(e.userID)\",\"tickets\":\(e.tickets)}\n".utf8)
        }
        return out
    }

    /// Parses a CSV or NDJSON export back into entries (for verification). Throws on a bad line.
    public static func parse(_ text: String) throws -> [Draw.Entry] {
        var entries: [Draw.Entry] = []
        for (n, raw) in text.split(separator: "\n", omittingEmptySubsequences: true).enumerated() {
            let line = raw.trimmingCharacters(in: .whitespaces)
            if line.isEmpty || line == "user_id,tickets" { continue }
            if line.hasPrefix("{") {
                struct Row: Decodable {
                    var userId: UInt64
                    var tickets: UInt32
                    private enum CodingKeys: String, CodingKey { case userId, tickets }
                    init(from decoder: any Decoder) throws {
                        let c = try decoder.container(keyedBy: CodingKeys.self)
                        userId = try JSONID.decode(c, .userId)
                        tickets = try c.decode(UInt32.self, forKey: .tickets)
                    }
                }
                guard let row = try? JSONDecoder().decode(Row.self, from: Data(line.utf8)) else {
                    throw ExportError(line: n + 1, text: String(line))
                }
                entries.append(Draw.Entry(userID: row.userId, tickets: row.tickets))
            } else {
                let cells = line.split(separator: ",")
                guard cells.count == 2, let user = UInt64(cells[0]), let tickets = UInt32(cells[1]) else {
                    throw ExportError(line: n + 1, text: String(line))
                }
                entries.append(Draw.Entry(userID: user, tickets: tickets))
            }
        }
        return entries
    }

    /// A line of an export that is neither `user_id,tickets` CSV nor the NDJSON object.
    public struct ExportError: Error, CustomStringConvertible, Sendable {
        public var line: Int
        public var text: String
        public var description: String { "line \(line) is not an entry: \(text.prefix(80))" }
    }
}

/// Recomputes a published draw from an export and the revealed seed, and checks it against what was
/// published — what `raffled verify` and `raffle verify` print.
public struct DrawVerification: Sendable {
    /// Entries and tickets in the export.
    public var entries: Int
    public var tickets: UInt64
    /// The recomputed entry-list hash and winners.
    public var entryListHash: String
    public var winners: [UInt64]
    /// Each published value checked, and whether it matched.
    public var checks: [(what: String, matches: Bool)]

    /// Whether every check matched.
    public var ok: Bool { checks.allSatisfy(\.matches) }

    /// Why verification could not run.
    public struct Failure: Error, CustomStringConvertible, Sendable {
        public var description: String
    }

    /// Recomputes the draw of `winnerCount` from `export` (CSV or NDJSON) and `seedHex`, checking
    /// the optional published `commitment`, entry-list `hash` and `expected` winners.
    /// - Throws: `Failure` for a seed that is not 64 hex digits; `Export.ExportError` for a bad line.
    public init(
        export: String, seedHex: String, winnerCount: Int, commitment: String? = nil, hash: String? = nil, expected: [UInt64]? = nil
    ) throws {
        guard let seed = Draw.bytes(hex: seedHex), seed.count == 32 else {
            throw Failure(description: "the seed must be 64 hex digits (32 bytes)")
        }
        guard winnerCount >= 0 else { throw Failure(description: "the winner count cannot be negative") }
        let list = try Export.parse(export)
        let result = Draw.winners(entries: list, seed: seed, count: winnerCount)
        entries = list.count
        tickets = list.reduce(0) { $0 + UInt64($1.tickets) }
        entryListHash = result.entryListHash
        winners = result.winners
        checks = []
        if let commitment { checks.append(("commitment = SHA-256(seed)", Draw.commitment(seed: seed) == commitment.lowercased())) }
        if let hash { checks.append(("entry-list hash", hash.lowercased() == result.entryListHash)) }
        if let expected { checks.append(("winners", expected == result.winners)) }
    }

    /// The report, one line each.
    public var lines: [String] {
        ["entries: \(entries), tickets: \(tickets)", "entry-list hash: \(entryListHash)",
         "winners: \(winners.map(String.init).joined(separator: ","))"]
            + checks.map { "\($0.what): \($0.matches ? "matches" : "DOES NOT MATCH") the published value" }
    }
}
