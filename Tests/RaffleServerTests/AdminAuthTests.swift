import Foundation
import NIOCore
import RaffleAdmission
import RaffleCore
import RaffleLedger
import RaffleStorage
import RaffleHTTP2
import RaffleHTTP2Client
@testable import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("Admin keys", .timeLimit(.minutes(1)))
struct AdminAuthTests {
    static let key = "an-admin-key-of-some-length-42"

    func check(_ keys: AdminKeys, _ header: String) -> AdminAuthResult { keys.check(authorization: Array(header.utf8)) }

    @Test func keysAreComparedOverTheirWholeLength() {
        let keys = AdminKeys([.init(name: "ops", key: Self.key)])
        #expect(check(keys, "Bearer " + Self.key) == .allowed("ops"))
        #expect(check(keys, "bearer " + Self.key) == .allowed("ops"), "the scheme is case-insensitive")
        #expect(check(keys, "") == .missing)
        #expect(check(keys, "Bearer " + Self.key + "x") == .wrong)
        #expect(check(keys, "Bearer " + String(Self.key.dropLast())) == .wrong)
        for k in 1...3 {
            #expect(check(keys, "Bearer " + Self.key + String(repeating: "\0", count: 256 * k)) == .wrong, "key + \(256 * k) bytes")
        }
        #expect(check(keys, "Basic " + Self.key) == .wrong)
        #expect(check(AdminKeys(), "Bearer " + Self.key) == .noKeysConfigured)
    }

    @Test func keysFileHoldsHashesOrKeys() throws {
        let dir = TempDir()
        let path = dir.path + "/keys.json"
        let json = #"{"keys":[{"name":"ops","sha256":"\#(AdminKeys.sha256Hex(of: Self.key))"},{"name":"ci","key":"another-key-0123456789"}]}"#
        try Data(json.utf8).write(to: URL(fileURLWithPath: path))
        let keys = try AdminKeys.load(path: path)
        #expect(check(keys, "Bearer " + Self.key) == .allowed("ops"))
        #expect(check(keys, "Bearer another-key-0123456789") == .allowed("ci"))
        #expect(!json.contains(Self.key), "the file need not hold the key itself")
        for (bad, says) in [
            (#"{"keys":[{"name":"x","sha256":"abc"}]}"#, "64 hex digits"),
            (#"{"keys":[{"name":"x","key":"short"}]}"#, "shorter than 16"),
            (#"{"keys":[{"name":"x"}]}"#, "exactly one of"),
            (#"{"keys":[]}"#, "names no admin key"),
            ("not json", "not a valid admin keys file"),
        ] {
            try Data(bad.utf8).write(to: URL(fileURLWithPath: path))
            #expect(throws: AdminKeysError.self) { try AdminKeys.load(path: path) }
            do { _ = try AdminKeys.load(path: path) } catch { #expect("\(error)".contains(says), "\(error)") }
        }
    }

    @Test func adminCallsNeedTheKeyAndPublicReadsDoNot() async throws {
        let f = try await ServerFixture.start()
        let create = Array(#"{"title":"Auth","durationSeconds":600,"winners":1}"#.utf8)
        let none = try await f.client.request(method: "POST", path: "/v1/raffles", body: create)
        #expect(none.status == 401)
        #expect(none.header("www-authenticate")?.hasPrefix("Bearer") == true)
        let wrong = try await f.client.request(method: "POST", path: "/v1/raffles", headers: [("authorization", "Bearer not-the-key-0123456789")], body: create)
        #expect(wrong.status == 403)
        let padded = try await f.client.request(
            method: "POST", path: "/v1/raffles", headers: [("authorization", testAdminHeader.1 + String(repeating: "a", count: 256))], body: create)
        #expect(padded.status == 403, "the key followed by 256 more bytes is another key")
        let right = try await f.client.request(method: "POST", path: "/v1/raffles", headers: [testAdminHeader], body: create)
        #expect(right.status == 201)
        let raffle = try JSONDecoder().decode(RaffleInfo.self, from: Data(right.body.readableBytesView)).id
        _ = try await f.post(batchFrame(raffle: raffle, users: [1, 2], requestID: 1))
        // Admin: close, draw, export, per-user lookups, stats.
        for (method, path) in [
            ("GET", "/v1/raffles/\(raffle)/export?format=csv"), ("GET", "/v1/raffles/\(raffle)/entries/1"), ("GET", "/v1/stats"),
            ("POST", "/v1/raffles/\(raffle)/close"), ("POST", "/v1/raffles/\(raffle)/draw"),
        ] {
            #expect(try await f.client.request(method: method, path: path).status == 401, "\(method) \(path)")
            #expect(try await f.admin(method, path).status == 200, "\(method) \(path)")
        }
        // Open: what verification needs, and health.
        for path in ["/v1/raffles", "/v1/raffles/\(raffle)", "/v1/raffles/\(raffle)/winners", "/healthz", "/readyz", "/metrics"] {
            #expect(try await f.client.request(method: "GET", path: path).status == 200, "\(path)")
        }
        await f.stop()
    }

    @Test func withoutAnyKeyTheAdminAPIIsRefused() async throws {
        let f = try await ServerFixture.start { $0.adminKeys = AdminKeys() }
        let refused = try await f.admin("POST", "/v1/raffles", body: Array(#"{"title":"x","durationSeconds":60}"#.utf8))
        #expect(refused.status == 403)
        #expect(String(buffer: refused.body).contains("no admin key is configured"))
        await f.stop()
    }

    @Test func aSeparateAdminListenerTakesTheAdminAPIAndMetrics() async throws {
        let f = try await ServerFixture.start { $0.adminPort = 0 }
        let adminPort = try #require(f.server.adminPort)
        #expect(adminPort != f.server.port)
        // Main port: entries and public reads; admin routes and /metrics are not there.
        #expect(try await f.admin("POST", "/v1/raffles", body: Array(#"{"title":"x","durationSeconds":60}"#.utf8)).status == 404)
        #expect(try await f.client.request(method: "GET", path: "/metrics").status == 404)
        #expect(try await f.client.request(method: "GET", path: "/healthz").status == 200)
        // Admin listener: plaintext HTTP/1.1 (a scrape) and HTTP/2, the key still required.
        let s = try RawSocket(port: adminPort)
        s.send(http1("GET", "/metrics") + http1("POST", "/v1/raffles", body: Array(#"{"title":"x","durationSeconds":60}"#.utf8)))
        let got = HTTP1Response.parseAll(s.readBytes(for: 3) { HTTP1Response.parseAll($0).count >= 2 }.bytes)
        #expect(got.map(\.status) == [200, 401])
        #expect(String(decoding: got.first.map(\.body) ?? [], as: UTF8.self).contains("raffled_entries_total"))
        let admin = try await HTTP2Client.connect(host: "127.0.0.1", port: adminPort, group: ServerFixture.group)
        let created = try await admin.request(
            method: "POST", path: "/v1/raffles", headers: [testAdminHeader], body: Array(#"{"title":"x","durationSeconds":60}"#.utf8))
        #expect(created.status == 201)
        let raffle = try JSONDecoder().decode(RaffleInfo.self, from: Data(created.body.readableBytesView)).id
        let entries = try await admin.request(
            method: "POST", path: Wire.entriesPath, headers: [framesType], body: batchFrame(raffle: raffle, users: [1], requestID: 1))
        #expect(entries.status == 404, "entries are not taken on the admin listener")
        let (status, _, _) = try await f.post(batchFrame(raffle: raffle, users: [1], requestID: 1))
        #expect(status == 200)
        await admin.close()
        await f.stop()
    }

    @Test func readinessFollowsTheLedgerAndShutdown() async throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path, durability: .fsync, segmentBytes: 1 << 20)
        let state = ServerState()
        let api = AdminAPI(
            ledger: ledger, admission: AdmissionController(AdmissionConfiguration()), metrics: ServerMetrics(durability: "fsync"),
            durability: .fsync, now: { 0 }, keys: AdminKeys(), state: state)
        #expect(await api.handle(get: true, post: false, path: "/readyz", body: []).response().status == 200)
        state.beginShutdown()
        let draining = await api.handle(get: true, post: false, path: "/readyz", body: []).response()
        #expect(draining.status == 503 && String(decoding: draining.body, as: UTF8.self).contains("shutting_down"))
        #expect(await api.handle(get: true, post: false, path: "/healthz", body: []).response().status == 200, "alive while draining")
        ledger.shutdown()
    }
}
