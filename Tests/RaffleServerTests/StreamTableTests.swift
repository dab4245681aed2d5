@testable import RaffleServer
import Testing

/// The HTTP/2 connection's pure parts: the stream table and request routing.
@Suite("Stream table and request routing")
struct StreamTableTests {
    @Test func slotsAreReusedAndFoundByStreamID() {
        var table = StreamTable()
        let a = table.open(1, now: 0)
        let b = table.open(3, now: 0)
        #expect(a != b && table.openCount == 2)
        #expect(table.slot(of: 1) == a && table.slot(of: 3) == b && table.slot(of: 5) == nil)
        table.close(a)
        #expect(table.slot(of: 1) == nil && table.openCount == 1, "a closed stream is not found, even through the cache")
        let c = table.open(5, now: 0)
        #expect(c == a, "the freed slot is reused")
        #expect(table.streams[c].id == 5 && table.streams[c].active)
        #expect(Set(table.openSlots) == [b, c])
    }

    func headers(_ fields: [(String, String)], maxFields: Int = 64, maxBytes: Int = 16_384) -> (StreamState, [HeaderVerdict], Int) {
        var stream = StreamState()
        stream.reset(id: 1, now: 0)
        var verdicts: [HeaderVerdict] = []
        var lookups = 0
        for (name, value) in fields {
            let n = Array(name.utf8), v = Array(value.utf8)
            let verdict = n.withUnsafeBytes { nb in
                v.withUnsafeBytes { vb in
                    let verdict = stream.takeHeader(name: nb, value: vb, maxFields: maxFields, maxBytes: maxBytes)
                    if verdict == .entriesAuthorization {
                        lookups += 1
                        stream.client = 7
                    }
                    return verdict
                }
            }
            verdicts.append(verdict)
        }
        return (stream, verdicts, lookups)
    }

    @Test func routingFollowsMethodPathAndContentType() {
        let entries = [(":method", "POST"), (":path", "/v1/entries"), ("content-type", "application/vnd.raffled.frames; v=1"), ("authorization", "Bearer k")]
        let (stream, _, lookups) = headers(entries)
        #expect(stream.routing(servesEntries: true) == .entries)
        #expect(stream.client == 7 && lookups == 1, "an entries request's key is looked up by the connection")
        #expect(stream.routing(servesEntries: false) == .refuse(status: 404, message: "entries are not taken on the admin listener"))
        #expect(headers([(":method", "GET"), (":path", "/v1/entries")]).0.routing(servesEntries: true) == .refuse(status: 405, message: "use POST for /v1/entries"))
        #expect(headers([(":method", "POST"), (":path", "/v1/entries"), ("content-type", "text/plain")]).0.routing(servesEntries: true) == .badContentType)
        let admin = headers([(":method", "GET"), (":path", "/v1/raffles/1"), ("authorization", "Bearer admin")])
        #expect(admin.0.routing(servesEntries: true) == .admin && admin.0.path == "/v1/raffles/1")
        #expect(admin.0.authorization == Array("Bearer admin".utf8) && admin.2 == 0, "an admin call keeps its own credentials")
        let twice = headers([(":method", "GET"), (":path", "/v1/stats"), ("authorization", "Bearer a"), ("authorization", "Bearer b")])
        #expect(twice.0.authorization == Array("Bearer a, Bearer b".utf8), "two fields are joined, matching no key")
    }

    @Test func headerLimitsAreCountedPerStream() {
        let many = (0..<5).map { ("x-\($0)", "v") }
        #expect(headers(many, maxFields: 4).1 == [.ok, .ok, .ok, .ok, .tooLarge])
        #expect(headers([("x-big", String(repeating: "a", count: 100))], maxBytes: 64).1 == [.tooLarge], "name + value + 32 bytes each")
    }
}
