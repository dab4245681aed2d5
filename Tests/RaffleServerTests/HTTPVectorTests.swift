import Foundation
import RaffleStorage
@testable import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// Protocol/vectors/http: the HTTP mapping of replies, from generate.py's reading of PROTOCOL.md.
@Suite("HTTP mapping vectors")
struct HTTPVectorTests {
    func load(_ name: String) throws -> [String: Any] {
        let data = try #require(FileManager.default.contents(atPath: repositoryRoot + "/Protocol/vectors/http/\(name).json"))
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    @Test func everyErrorCodeMapsToItsStatus() throws {
        let rows = try #require(try load("status-by-first-reply")["first_reply"] as? [[String: Any]])
        var errors = 0
        for row in rows where row["frame"] as? String == "error" {
            let name = try #require(row["code"] as? String)
            let code = try #require(ProtocolErrorCode(name: name), "\(name) is a code")
            #expect(Int(code.rawValue) == row["value"] as? Int)
            #expect(code.httpStatus == row["status"] as? Int, "\(name)")
            errors += 1
        }
        #expect(errors == 19, "every code of PROTOCOL.md §7")
        #expect(rows.contains { $0["frame"] as? String == "throttled" && $0["status"] as? Int == 429 })
    }

    @Test func retryAfterIsWholeSecondsRoundedUp() throws {
        let cases = try #require(try load("retry-after-seconds")["cases"] as? [[String: Any]])
        for c in cases {
            var stream = StreamState()
            stream.status = 429
            stream.retryAfterMilliseconds = UInt32(try #require(c["retry_after_ms"] as? Int))
            var fields: [String: String] = [:]
            stream.responseFields(durability: .fsync) { fields["\($0)"] = $1 }
            #expect(fields["retry-after"] == c["retry_after"] as? String, "\(c)")
        }
    }
}
