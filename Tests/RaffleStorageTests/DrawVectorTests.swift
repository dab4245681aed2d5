import Foundation
@testable import RaffleCore
import RaffleTestSupport
import Testing

/// One draw vector of Protocol/vectors/draw (written by generate.py from Protocol/DRAW.md alone).
struct DrawVector: CustomStringConvertible, Sendable {
    let name: String
    let seed: String
    let commitment: String
    let entries: [Draw.Entry]
    let winnerCount: Int
    let canonicalListHex: String?
    let entryListHash: String
    let randomU64: [UInt64]
    let winners: [UInt64]
    let exportCSV: String
    let exportNDJSON: String

    var description: String { name }

    static let all: [DrawVector] = {
        let dir = repositoryRoot + "/Protocol/vectors/draw"
        let files = ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).filter { $0.hasSuffix(".json") }.sorted()
        return files.compactMap { file in
            guard let data = FileManager.default.contents(atPath: dir + "/" + file),
                let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any]
            else { return nil }
            let entries = (json["entries"] as? [[Any]] ?? []).compactMap { pair -> Draw.Entry? in
                guard let user = (pair.first as? String).flatMap(UInt64.init), let tickets = pair.last as? Int else { return nil }
                return Draw.Entry(userID: user, tickets: UInt32(tickets))
            }
            return DrawVector(
                name: String(file.dropLast(5)), seed: json["seed"] as? String ?? "", commitment: json["commitment"] as? String ?? "",
                entries: entries, winnerCount: json["winner_count"] as? Int ?? 0, canonicalListHex: json["canonical_list_hex"] as? String,
                entryListHash: json["entry_list_hash"] as? String ?? "",
                randomU64: (json["random_u64"] as? [String] ?? []).compactMap(UInt64.init),
                winners: (json["winners"] as? [String] ?? []).compactMap(UInt64.init),
                exportCSV: json["export_csv"] as? String ?? "", exportNDJSON: json["export_ndjson"] as? String ?? "")
        }
    }()
}

@Suite("Draw vectors (Protocol/DRAW.md)")
struct DrawVectorTests {
    @Test func vectorsAreThere() { #expect(DrawVector.all.count >= 6) }

    @Test("the Swift draw matches the spec's independent implementation", arguments: DrawVector.all)
    func drawMatches(_ v: DrawVector) throws {
        let seed = try #require(Draw.bytes(hex: v.seed))
        #expect(Draw.commitment(seed: seed) == v.commitment)
        let canonical = Draw.canonical(v.entries).filter { $0.tickets > 0 }
        if let hex = v.canonicalListHex {
            var bytes: [UInt8] = []
            for e in canonical {
                withUnsafeBytes(of: e.userID.littleEndian) { bytes += $0 }
                withUnsafeBytes(of: e.tickets.littleEndian) { bytes += $0 }
            }
            #expect(Draw.hex(bytes) == hex, "the canonical list, byte by byte")
        }
        let (hash, winners) = Draw.winners(entries: v.entries, seed: seed, count: v.winnerCount)
        #expect(hash == v.entryListHash)
        #expect(winners == v.winners)
        var stream = RandomStream(seed: seed, listHash: try #require(Draw.bytes(hex: hash)))
        #expect(v.randomU64.map { _ in stream.next() } == v.randomU64, "the random stream")
        #expect(String(decoding: Export.csv(canonical), as: UTF8.self) == v.exportCSV)
        #expect(String(decoding: Export.ndjson(canonical), as: UTF8.self) == v.exportNDJSON)
        #expect(try Export.parse(v.exportCSV) == canonical && Export.parse(v.exportNDJSON) == canonical)
    }
}

@Suite("64-bit ids in the JSON API")
struct JSONIDTests {
    @Test func idsAreWrittenAsStringsAndReadEitherWay() throws {
        let draw = DrawResult(closedAt: 1, entryListHash: "h", seed: "s", entries: 1, tickets: 1, winners: [UInt64.max])
        let info = RaffleInfo(
            id: UInt64.max - 1, spec: RaffleSpec(title: "t", opensAt: 0, closesAt: 1), seedCommitment: "c", state: .drawn, entries: 1,
            tickets: 1, draw: draw)
        let text = String(decoding: try JSONEncoder().encode(info), as: UTF8.self)
        #expect(text.contains(#""id":"18446744073709551614""#) && text.contains(#""winners":["18446744073709551615"]"#), "\(text)")
        #expect(try JSONDecoder().decode(RaffleInfo.self, from: Data(text.utf8)) == info)
        // Numbers are still read (clients of the previous version).
        let numeric = text.replacingOccurrences(of: #""18446744073709551614""#, with: "18446744073709551614")
            .replacingOccurrences(of: #"["18446744073709551615"]"#, with: "[18446744073709551615]")
        #expect(try JSONDecoder().decode(RaffleInfo.self, from: Data(numeric.utf8)) == info)
        #expect(throws: DecodingError.self) { try JSONDecoder().decode(RaffleInfo.self, from: Data(text.replacingOccurrences(of: "18446744073709551614", with: "x").utf8)) }
    }
}
