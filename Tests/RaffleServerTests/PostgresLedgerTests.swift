import Foundation
import NIOCore
import RaffleCore
import RaffleHTTP2
import RaffleHTTP2Client
import RaffleTestSupport
import RaffleWire
import Synchronization
import Testing

/// raffled nodes sharing one PostgreSQL (`--ledger postgres://…`): real processes, a real private
/// cluster per test (scripts/pg-cluster), on 127.0.0.1 only.
@Suite("Several raffled nodes on PostgreSQL", .serialized, .timeLimit(.minutes(3)))
struct PostgresLedgerTests {
    func node(_ cluster: PostgresCluster, _ dir: TempDir, _ name: String) async throws -> RaffledProcess {
        try await RaffledProcess.launch(data: dir.path + "/" + name, extra: ["--ledger", cluster.url])
    }

    /// Two nodes on one cluster, each with an HTTP/2 client.
    struct TwoNodes {
        let a, b: RaffledProcess
        let ca, cb: HTTP2Client

        static func start(_ cluster: PostgresCluster, _ dir: TempDir) async throws -> TwoNodes {
            let a = try await RaffledProcess.launch(data: dir.path + "/a", extra: ["--ledger", cluster.url])
            let b: RaffledProcess
            do { b = try await RaffledProcess.launch(data: dir.path + "/b", extra: ["--ledger", cluster.url]) } catch {
                _ = a.terminate()
                throw error
            }
            return TwoNodes(
                a: a, b: b, ca: try await HTTP2Client.connect(host: "127.0.0.1", port: a.port, group: ServerFixture.group),
                cb: try await HTTP2Client.connect(host: "127.0.0.1", port: b.port, group: ServerFixture.group))
        }

        /// Stops both processes at once (SIGKILL: a graceful stop would wait for the open clients, and
        /// this runs in a `defer`, blocking a thread of the shared pool).
        func stop() {
            a.kill9()
            b.kill9()
        }
    }

    @Test func theSameUserThroughTwoNodesIsOneEntry() async throws {
        try await withPostgres { pg in
            let dir = TempDir()
            let nodes = try await TwoNodes.start(pg, dir)
            defer { nodes.stop() }
            let (a, ca, cb) = (nodes.a, nodes.ca, nodes.cb)
            let raffle = try await ca.createRaffle(#"{"title":"Two nodes","durationSeconds":600,"maxTicketsPerUser":2}"#, on: a).id
            // Node b never saw the raffle made on a: it learns it from PostgreSQL.
            let viaB = try JSONDecoder().decode(RaffleInfo.self, from: Data(try await cb.request(method: "GET", path: "/v1/raffles/\(raffle)").body.readableBytesView))
            #expect(viaB.id == raffle && viaB.state == .open)
            let health = String(buffer: try await cb.request(method: "GET", path: "/healthz").body)
            #expect(health.contains("\"durability\":\"postgresql\""), "\(health)")

            #expect(try await cb.postEntries(batchFrame(raffle: raffle, users: [42], requestID: 1)).first?.outcomes == [.accepted])
            #expect(try await ca.postEntries(batchFrame(raffle: raffle, users: [42], requestID: 2)).first?.outcomes == [.alreadyEntered])
            // Invalid entries are answered without reaching the database; too many tickets too.
            let mixed = try await ca.postEntries(batchFrame(raffle: raffle, users: [0, 43, 42], requestID: 3))
            #expect(mixed.first?.outcomes == [.invalidUserID, .accepted, .alreadyEntered])
            let tooMany = try await cb.postEntries(batchFrame(raffle: raffle, users: [44], requestID: 4, tickets: 3))
            #expect(tooMany.first?.outcomes == [.invalidTickets])
            // A retry of an entry a node saw stored is answered by that node alone.
            #expect(try await ca.postEntries(batchFrame(raffle: raffle, users: [43], requestID: 5)).first?.outcomes == [.alreadyEntered])
            // An unknown raffle: the error, from either node.
            let unknown = try await cb.postEntries(batchFrame(raffle: 9_999, users: [1], requestID: 6))
            #expect(unknown.first?.errorCode == .unknownRaffle)

            // Both nodes at once, the same 400 users each: exactly one `accepted` per user across them.
            let users = (1_000..<1_400).map { UInt64($0) }
            async let fromA = ca.postEntries(batchFrame(raffle: raffle, users: users, requestID: 7))
            async let fromB = cb.postEntries(batchFrame(raffle: raffle, users: users, requestID: 7))
            let (ra, rb) = try await (fromA, fromB)
            let oa = try #require(ra.first?.outcomes)
            let ob = try #require(rb.first?.outcomes)
            let pairs = zip(oa, ob)
            #expect(pairs.allSatisfy { ($0 == .accepted) != ($1 == .accepted) }, "one node accepts each user, the other says already_entered")
            #expect(pairs.allSatisfy { $0.isEntered && $1.isEntered })
            #expect(try await pg.psql("SELECT count(*) FROM raffled.entries WHERE raffle_id = \(raffle)") == "402")
        }
    }

    @Test func kill9OfANodeUnderLoadLosesNothingAcknowledged() async throws {
        try await withPostgres { pg in
            let dir = TempDir()
            let a = try await node(pg, dir, "a")
            let client = try await HTTP2Client.connect(host: "127.0.0.1", port: a.port, group: ServerFixture.group)
            let raffle = try await client.createRaffle(#"{"title":"Crash","durationSeconds":600}"#, on: a).id
            let acked = Acked()
            await withTaskGroup(of: Void.self) { group in
                for writer in 0..<8 {
                    group.addTask {
                        for round in 0..<100_000 {
                            let users = (0..<20).map { UInt64(writer * 10_000_000 + round * 20 + $0 + 1) }
                            guard let frames = try? await client.postEntries(batchFrame(raffle: raffle, users: users, requestID: UInt64(round))),
                                let outcomes = frames.first?.outcomes
                            else { return }
                            acked.set.withLock { $0.formUnion(zip(users, outcomes).filter { $0.1.isEntered }.map(\.0)) }
                        }
                    }
                }
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(1_500))
                    a.kill9()
                }
            }
            await client.close()
            let ackedUsers = acked.set.withLock { $0 }
            #expect(ackedUsers.count > 100, "the load ran before the kill (\(ackedUsers.count) acked)")
            let stored = try await pg.psql("SELECT user_id FROM raffled.entries WHERE raffle_id = \(raffle)").split(separator: "\n").compactMap { UInt64($0) }
            #expect(Set(stored).count == stored.count, "no entry is stored twice")
            #expect(ackedUsers.isSubset(of: Set(stored)), "lost \(ackedUsers.subtracting(Set(stored)).count) acknowledged entries")
        }
    }

    @Test func postgresRestartedUnderLoadLosesNothingAndServiceResumes() async throws {
        try await withPostgres { pg in
            let dir = TempDir()
            let a = try await node(pg, dir, "a")
            defer { a.kill9() }
            let client = try await HTTP2Client.connect(host: "127.0.0.1", port: a.port, group: ServerFixture.group)
            let raffle = try await client.createRaffle(#"{"title":"Restart","durationSeconds":600}"#, on: a).id
            let acked = Acked()
            let run = RunState()
            await withTaskGroup(of: Void.self) { group in
                for writer in 0..<4 {
                    group.addTask {
                        var round = 0
                        while !run.stop.load(ordering: .relaxed) {
                            round += 1
                            let users = (0..<20).map { UInt64(writer * 10_000_000 + round * 20 + $0 + 1) }
                            guard let frames = try? await client.postEntries(batchFrame(raffle: raffle, users: users, requestID: UInt64(round))),
                                let reply = frames.first
                            else { continue }
                            if let outcomes = reply.outcomes {
                                acked.set.withLock { $0.formUnion(zip(users, outcomes).filter { $0.1.isEntered }.map(\.0)) }
                                if run.flag.load(ordering: .relaxed) { run.count.add(1, ordering: .relaxed) }
                            } else if let code = reply.errorCode {
                                run.refused.withLock { $0[code, default: 0] += 1 }
                                try? await Task.sleep(for: .milliseconds(50))
                            }
                        }
                    }
                }
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(800))
                    try? await pg.restart(downFor: .seconds(2))
                    run.flag.store(true, ordering: .relaxed)
                    // Service resumes by itself: wait (bounded) for acks after the restart.
                    for _ in 0..<200 where run.count.load(ordering: .relaxed) < 20 {
                        try? await Task.sleep(for: .milliseconds(100))
                    }
                    run.stop.store(true, ordering: .relaxed)
                }
            }
            await client.close()
            let refusals = run.refused.withLock { $0 }
            #expect(run.count.load(ordering: .relaxed) >= 20, "entries are acknowledged again after PostgreSQL came back")
            #expect(refusals.keys.allSatisfy { $0 == .unavailable }, "while PostgreSQL was down, batches were answered UNAVAILABLE: \(refusals)")
            let stored = Set(try await pg.psql("SELECT user_id FROM raffled.entries WHERE raffle_id = \(raffle)").split(separator: "\n").compactMap { UInt64($0) })
            let ackedUsers = acked.set.withLock { $0 }
            #expect(ackedUsers.isSubset(of: stored), "lost \(ackedUsers.subtracting(stored).count) acknowledged entries")
        }
    }

    @Test func aCloseRacingEntriesCommitsNoneAfterItAndTheDrawVerifies() async throws {
        try await withPostgres { pg in
            let dir = TempDir()
            let nodes = try await TwoNodes.start(pg, dir)
            defer { nodes.stop() }
            let (a, b, ca, cb) = (nodes.a, nodes.b, nodes.ca, nodes.cb)
            let raffle = try await ca.createRaffle(#"{"title":"Race","durationSeconds":600,"winners":3}"#, on: a).id
            let acked = Acked()
            let run = RunState()
            await withTaskGroup(of: Void.self) { group in
                for writer in 0..<6 {
                    let client = writer % 2 == 0 ? ca : cb
                    group.addTask {
                        for round in 0..<100_000 {
                            let users = (0..<10).map { UInt64(writer * 10_000_000 + round * 10 + $0 + 1) }
                            guard let frames = try? await client.postEntries(batchFrame(raffle: raffle, users: users, requestID: UInt64(round))),
                                let outcomes = frames.first?.outcomes
                            else { return }
                            acked.set.withLock { $0.formUnion(zip(users, outcomes).filter { $0.1.isEntered }.map(\.0)) }
                            if outcomes.allSatisfy({ $0 == .raffleClosed }) {
                                if run.count.add(1, ordering: .relaxed).newValue > 30 { return }
                            } else if run.flag.load(ordering: .relaxed) && outcomes.contains(.accepted) {
                                // Accepted after the close returned: impossible if the close waits for rounds in flight.
                                Issue.record("entries accepted after the close had returned")
                            }
                        }
                    }
                }
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(700))
                    _ = try? await cb.request(method: "POST", path: "/v1/raffles/\(raffle)/close", headers: [b.adminHeader])
                    run.flag.store(true, ordering: .relaxed)
                }
            }
            let draw = try JSONDecoder().decode(
                DrawResult.self, from: Data(try await ca.request(method: "GET", path: "/v1/raffles/\(raffle)/winners").body.readableBytesView))
            let stored = try await pg.psql("SELECT count(*) FROM raffled.entries WHERE raffle_id = \(raffle)")
            #expect(String(draw.entries) == stored, "the draw counted every committed entry and none committed after it")
            #expect(acked.set.withLock { $0.count } == draw.entries, "every acknowledged entry is in the draw, and only those")
            // Both nodes publish the same draw; it verifies from the export.
            let fromB = try JSONDecoder().decode(
                DrawResult.self, from: Data(try await cb.request(method: "GET", path: "/v1/raffles/\(raffle)/winners").body.readableBytesView))
            #expect(fromB == draw)
            let export = try await ca.request(method: "GET", path: "/v1/raffles/\(raffle)/export?format=csv", headers: [a.adminHeader])
            let file = dir.path + "/export.csv"
            try Data(export.body.readableBytesView).write(to: URL(fileURLWithPath: file))
            let verify = try await runCommand(
                RaffledProcess.executable.path,
                ["verify", "--export", file, "--seed", draw.seed, "--winners", "3", "--hash", draw.entryListHash,
                 "--expect", draw.winners.map(String.init).joined(separator: ",")])
            #expect(verify.status == 0, "\(verify.stdout)\(verify.stderr)")
            #expect(try await pg.psql("SELECT count(*) FROM raffled.draws WHERE raffle_id = \(raffle)") == "1")
        }
    }

    @Test func automaticCloseHappensOnceWhicheverNodeGetsThereFirst() async throws {
        try await withPostgres { pg in
            let dir = TempDir()
            let nodes = try await TwoNodes.start(pg, dir)
            defer { nodes.stop() }
            let (a, ca, cb) = (nodes.a, nodes.ca, nodes.cb)
            let raffle = try await ca.createRaffle(#"{"title":"Timed","durationSeconds":2,"winners":2}"#, on: a).id
            _ = try await cb.postEntries(batchFrame(raffle: raffle, users: 1...50, requestID: 1))
            var draws: [DrawResult] = []
            for _ in 0..<100 {
                try await Task.sleep(for: .milliseconds(100))
                let ra = try await ca.request(method: "GET", path: "/v1/raffles/\(raffle)/winners")
                let rb = try await cb.request(method: "GET", path: "/v1/raffles/\(raffle)/winners")
                if ra.status == 200 && rb.status == 200 {
                    draws = try [ra, rb].map { try JSONDecoder().decode(DrawResult.self, from: Data($0.body.readableBytesView)) }
                    break
                }
            }
            #expect(draws.count == 2 && draws[0] == draws[1] && draws[0].entries == 50)
            #expect(try await pg.psql("SELECT count(*) FROM raffled.draws") == "1")
            let late = try await ca.postEntries(batchFrame(raffle: raffle, users: [51], requestID: 2))
            #expect(late.first?.outcomes == [.raffleClosed])
        }
    }

    @Test func anUnreachableDatabaseAtStartIsAClearError() async throws {
        let dir = TempDir()
        let result = try await runCommand(
            RaffledProcess.executable.path, ["--port", "0", "--data", dir.path, "--ledger", "postgres://postgres@127.0.0.1:1/raffles"], timeout: 60)
        #expect(result.status == 1)
        #expect(result.stderr.contains("cannot use PostgreSQL at postgres@127.0.0.1:1/raffles"), "\(result.stderr)")
        let bad = try await runCommand(RaffledProcess.executable.path, ["--ledger", "mysql://x"], timeout: 30)
        #expect(bad.status != 0 && bad.stderr.contains("postgres://"), "\(bad.stderr)")
    }
}

/// Flags and counters shared by a test's writer tasks.
final class RunState: Sendable {
    let stop = Atomic<Bool>(false)
    let flag = Atomic<Bool>(false)
    let count = Atomic<Int>(0)
    let refused = Mutex<[ProtocolErrorCode: Int]>([:])
}

/// Several nodes behind one address: SO_REUSEPORT on one host, HAProxy (ops/haproxy/raffled.cfg) in
/// front of nodes on their own ports.
@Suite("raffled nodes behind one address", .serialized, .timeLimit(.minutes(3)))
struct SharedAddressTests {
    /// Eight connections through `port` each submit fresh users; returns the acknowledged ones.
    func load(port: Int, raffle: UInt64, base: UInt64) async throws -> Set<UInt64> {
        try await withThrowingTaskGroup(of: Set<UInt64>.self) { group in
            for c in 0..<8 {
                group.addTask {
                    let client = try await HTTP2Client.connect(host: "127.0.0.1", port: port, group: ServerFixture.group)
                    var acked = Set<UInt64>()
                    for round in 0..<10 {
                        let users = (0..<10).map { base + UInt64(c * 1_000 + round * 10 + $0) }
                        let outcomes = try await client.postEntries(batchFrame(raffle: raffle, users: users, requestID: UInt64(round))).first?.outcomes
                        acked.formUnion(zip(users, outcomes ?? []).filter { $0.1 == .accepted }.map(\.0))
                    }
                    await client.close()
                    return acked
                }
            }
            return try await group.reduce(into: Set<UInt64>()) { $0.formUnion($1) }
        }
    }

    @Test func twoProcessesShareThePortsWithReusePort() async throws {
        try await withPostgres { pg in
            let dir = TempDir()
            // One admin key for both nodes (either may answer a connection).
            let key = String(repeating: "k", count: 40)
            let keys = dir.path + "/keys.json"
            try #"{"keys":[{"name":"ops","key":"\#(key)"}]}"#.write(toFile: keys, atomically: true, encoding: .utf8)
            let url = pg.url
            let extra = { @Sendable (port: Int) in ["--ledger", url, "--reuse-port", "--port", String(port), "--admin-keys", keys] }
            let a = try await RaffledProcess.launch(data: dir.path + "/a", onFreePort: extra)
            let port = a.port
            let b = try await RaffledProcess.launch(data: dir.path + "/b", extra: extra(port))
            defer { b.kill9() }
            #expect(a.port == port && b.port == port)
            let admin = try await HTTP2Client.connect(host: "127.0.0.1", port: port, group: ServerFixture.group)
            let response = try await admin.request(
                method: "POST", path: "/v1/raffles", headers: [("authorization", "Bearer " + key)],
                body: Array(#"{"title":"Shared port","durationSeconds":600}"#.utf8))
            let raffle = try JSONDecoder().decode(RaffleInfo.self, from: Data(response.body.readableBytesView)).id
            await admin.close()
            let first = try await load(port: port, raffle: raffle, base: 1)
            #expect(first.count == 800)
            // One process dies: the port stays served by the other.
            a.kill9()
            let second = try await load(port: port, raffle: raffle, base: 100_000)
            #expect(second.count == 800)
            #expect(try await pg.psql("SELECT count(*) FROM raffled.entries WHERE raffle_id = \(raffle)") == "1600")
        }
    }

    @Test func haproxyInFrontOfTwoNodesSkipsADeadOne() async throws {
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/haproxy") else {
            Issue.record("HAProxy is not installed: scripts/setup --tests installs it (apt-get install -y haproxy)")
            return
        }
        try await withPostgres { pg in
            let dir = TempDir()
            let url = pg.url
            let a = try await RaffledProcess.launch(data: dir.path + "/a") { ["--ledger", url, "--port", String($0)] }
            let b = try await RaffledProcess.launch(data: dir.path + "/b") { ["--ledger", url, "--port", String($0)] }
            let (pa, pb, lb, lbTCP) = (a.port, b.port, try freePort(), try freePort())
            defer { b.kill9() }
            let haproxy = Process()
            haproxy.executableURL = URL(fileURLWithPath: "/usr/sbin/haproxy")
            haproxy.arguments = ["-db", "-f", repositoryRoot + "/ops/haproxy/raffled.cfg"]
            haproxy.environment = [
                "RAFFLED_LB_HTTP": "127.0.0.1:\(lb)", "RAFFLED_LB_TCP": "127.0.0.1:\(lbTCP)",
                "RAFFLED_NODE1": "127.0.0.1:\(pa)", "RAFFLED_NODE1_TCP": "127.0.0.1:\(pa + 1)", "RAFFLED_NODE1_CHECK": String(pa),
                "RAFFLED_NODE2": "127.0.0.1:\(pb)", "RAFFLED_NODE2_TCP": "127.0.0.1:\(pb + 1)", "RAFFLED_NODE2_CHECK": String(pb),
            ]
            haproxy.standardOutput = FileHandle.nullDevice
            haproxy.standardError = FileHandle.nullDevice
            try haproxy.run()
            defer {
                haproxy.terminate()
                haproxy.waitUntilExit()
            }
            // Wait (bounded) until the balancer answers.
            var ready = false
            for _ in 0..<100 where !ready {
                try await Task.sleep(for: .milliseconds(100))
                if let client = try? await HTTP2Client.connect(host: "127.0.0.1", port: lb, group: ServerFixture.group) {
                    ready = (try? await client.request(method: "GET", path: "/readyz").status) == 200
                    await client.close()
                }
            }
            #expect(ready, "HAProxy forwards to raffled")
            let admin = try await HTTP2Client.connect(host: "127.0.0.1", port: pa, group: ServerFixture.group)
            let raffle = try await admin.createRaffle(#"{"title":"Balanced","durationSeconds":600}"#, on: a).id
            await admin.close()
            let first = try await load(port: lb, raffle: raffle, base: 1)
            #expect(first.count == 800)
            a.kill9()
            // Two failed checks 500 ms apart mark it down.
            try await Task.sleep(for: .milliseconds(1_600))
            let second = try await load(port: lb, raffle: raffle, base: 100_000)
            #expect(second.count == 800, "every connection went to the live node")
            #expect(try await pg.psql("SELECT count(*) FROM raffled.entries WHERE raffle_id = \(raffle)") == "1600")
        }
    }
}
