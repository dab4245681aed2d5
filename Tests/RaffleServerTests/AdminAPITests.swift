import Foundation
import NIOCore
import RaffleCore
import RaffleHTTP2
import RaffleLedger
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("Admin and read API", .timeLimit(.minutes(1)))
struct AdminAPITests {
    @Test func raffleLifeCycleWithVerifiableDraw() async throws {
        let f = try await ServerFixture.start()
        let raffle = try await f.createRaffle(winners: 5, maxTickets: 3)
        let created = try await f.getJSON("/v1/raffles/\(raffle)", as: RaffleInfo.self)
        #expect(created.state == .open && created.seedCommitment.count == 64 && created.draw == nil)
        for chunk in 0..<4 {
            let users = (1...250).map { UInt64(chunk * 250 + $0) * 104_729 }
            _ = try await f.post(batchFrame(raffle: raffle, users: users, requestID: UInt64(chunk), tickets: UInt32(chunk % 3 + 1)))
        }
        let early = try await f.client.request(method: "GET", path: "/v1/raffles/\(raffle)/winners")
        #expect(early.status == 409)
        let closed = try await f.admin("POST", "/v1/raffles/\(raffle)/close")
        #expect(closed.status == 200)
        let draw = try await f.getJSON("/v1/raffles/\(raffle)/winners", as: DrawResult.self)
        #expect(draw.winners.count == 5 && draw.entries == 1_000)
        // Anyone can check: the seed matches the commitment, and the export + seed give the winners.
        let seed = try #require(Draw.bytes(hex: draw.seed))
        #expect(Draw.commitment(seed: seed) == created.seedCommitment)
        for format in ["csv", "ndjson"] {
            let export = try await f.admin("GET", "/v1/raffles/\(raffle)/export?format=\(format)")
            #expect(export.status == 200)
            let entries = try Export.parse(String(buffer: export.body))
            #expect(entries.count == 1_000)
            let again = Draw.winners(entries: entries, seed: seed, count: 5)
            #expect(again.winners == draw.winners && again.entryListHash == draw.entryListHash, "\(format)")
        }
        // Drawing again returns the same result.
        let redraw = try await f.admin("POST", "/v1/raffles/\(raffle)/draw")
        let info = try JSONDecoder().decode(RaffleInfo.self, from: Data(redraw.body.readableBytesView))
        #expect(info.draw == draw)
        await f.stop()
    }

    @Test func listGetStatusStatsAndMetrics() async throws {
        let f = try await ServerFixture.start()
        let a = try await f.createRaffle()
        let b = try await f.createRaffle()
        _ = try await f.post(batchFrame(raffle: a, users: [5, 6, 6], requestID: 1))
        let list = try await f.getJSON("/v1/raffles", as: [RaffleInfo].self)
        #expect(list.map(\.id) == [a, b])
        struct Status: Decodable { var entered: Bool }
        #expect(try await f.getJSON("/v1/raffles/\(a)/entries/5", as: Status.self).entered)
        #expect(try await f.getJSON("/v1/raffles/\(a)/entries/7", as: Status.self).entered == false)
        let stats = try await f.getJSON("/v1/stats", as: LedgerStats.self)
        #expect(stats.entries == 2 && stats.raffles == 2 && stats.durability == "fsync")
        let metrics = String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
        #expect(metrics.contains(#"raffled_entries_total{outcome="accepted"} 2"#))
        #expect(metrics.contains(#"raffled_entries_total{outcome="already_entered"} 1"#))
        #expect(metrics.contains("raffled_batches_total 1"))
        #expect(metrics.contains("raffled_ack_latency_seconds_count"))
        #expect(metrics.contains(#"raffled_log_fsyncs_total{durability="fsync"}"#))
        #expect(metrics.contains("raffled_connections_open"))
        let health = try await f.client.request(method: "GET", path: "/healthz")
        #expect(health.status == 200)
        await f.stop()
    }

    @Test func badAdminRequestsGetClearErrors() async throws {
        let f = try await ServerFixture.start()
        let notJSON = try await f.admin("POST", "/v1/raffles", body: Array("title=x".utf8))
        #expect(notJSON.status == 400 && String(buffer: notJSON.body).contains("error"))
        let noEnd = try await f.admin("POST", "/v1/raffles", body: Array(#"{"title":"x"}"#.utf8))
        #expect(noEnd.status == 400 && String(buffer: noEnd.body).contains("durationSeconds"))
        let badSpec = try await f.admin("POST", "/v1/raffles", body: Array(#"{"title":"x","durationSeconds":60,"winners":0}"#.utf8))
        #expect(badSpec.status == 400 && String(buffer: badSpec.body).contains("winners"))
        #expect(try await f.client.request(method: "GET", path: "/v1/raffles/42").status == 404)
        #expect(try await f.client.request(method: "GET", path: "/v1/raffles/abc").status == 404)
        #expect(try await f.client.request(method: "GET", path: "/nope").status == 404)
        #expect(try await f.client.request(method: "DELETE", path: "/v1/raffles").status == 405)
        let big = [UInt8](repeating: 0x20, count: 70_000)
        #expect(try await f.admin("POST", "/v1/raffles", body: big).status == 413)
        await f.stop()
    }
}
