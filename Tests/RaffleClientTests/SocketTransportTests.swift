import Logging
import RaffleAdmission
import RaffleClient
import RaffleClientHTTP2
import RaffleClientSockets
import RaffleCore
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("RaffleClient over raw TCP and UDP against a real raffled", .timeLimit(.minutes(1)))
struct SocketTransportTests {
    static func start(_ configure: (inout ServerConfiguration) -> Void = { _ in }) async throws -> (RaffleServer, TempDir, RaffleClient) {
        let (s, dir) = try await TestServer.start(configure)
        return (s, dir, RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: .init(adminKey: testAdminKey)))
    }

    @Test func submitsAndBulkStreamsOverRawTCP() async throws {
        let (s, dir, admin) = try await Self.start()
        let raffle = try await admin.createRaffle(title: "TCP", duration: .seconds(600))
        let tcp = RaffleClient(transport: TCPTransport(host: "127.0.0.1", port: try #require(s.tcpPort)))
        #expect(try await tcp.submit([Entry(userID: 1), Entry(userID: 2), Entry(userID: 1)], to: raffle.id) == [.accepted, .accepted, .alreadyEntered])
        // Concurrent requests on one connection, replies matched by request id.
        let results = try await withThrowingTaskGroup(of: [EntryOutcome].self) { group in
            for k in UInt64(1)...20 { group.addTask { try await tcp.submit((0..<5).map { Entry(userID: k * 100 + $0) }, to: raffle.id) } }
            return try await group.reduce(into: [[EntryOutcome]]()) { $0.append($1) }
        }
        #expect(results.count == 20 && results.allSatisfy { $0 == Array(repeating: .accepted, count: 5) })
        // A bulk stream on its own raw-TCP connection.
        let stream = tcp.bulkStream(raffle: raffle.id)
        for k in 0..<10 {
            #expect(try await stream.send((0..<50).map { Entry(userID: UInt64(10_000 + k * 50 + $0)) }).allSatisfy { $0 == .accepted })
        }
        await stream.close()
        #expect(try await admin.raffle(raffle.id).entries == 2 + 100 + 500)
        do {
            _ = try await tcp.raffles()
            Issue.record("no admin API over raw TCP")
        } catch let error as RaffleClientError {
            #expect(error.kind == .invalidRequest && error.message.contains("HTTP/2"))
        }
        await tcp.transport.close()
        await admin.transport.close()
        await s.shutdown()
        _ = dir
    }

    @Test func aLossyUDPPathStillEntersEveryUserExactlyOnce() async throws {
        let (s, dir, admin) = try await Self.start()
        let raffle = try await admin.createRaffle(title: "UDP", duration: .seconds(600))
        var timing = UDPTransport.Timing()
        timing.initialTimeout = .milliseconds(30)
        timing.maxTimeout = .milliseconds(200)
        let transport = UDPTransport(
            host: "127.0.0.1", port: try #require(s.udpPort), timing: timing,
            impairment: .init(dropShare: 0.2, duplicateShare: 0.15, reorderShare: 0.2, seed: 42))
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.deadline = .seconds(20)
        let udp = RaffleClient(transport: transport, configuration: config)
        let batches = 40, size = 10
        let outcomes = try await withThrowingTaskGroup(of: [EntryOutcome].self) { group in
            for k in 0..<batches {
                group.addTask { try await udp.submit((0..<size).map { Entry(userID: UInt64(k * size + $0 + 1)) }, to: raffle.id) }
            }
            return try await group.reduce(into: [EntryOutcome]()) { $0 += $1 }
        }
        #expect(outcomes.count == batches * size)
        #expect(outcomes.allSatisfy { $0.isEntered }, "accepted, or already entered after a lost ack")
        #expect(transport.datagramsSent > batches, "losses were made good by retransmission (\(transport.datagramsSent) datagrams)")
        // Exactly once in the ledger.
        let export = try await admin.export(raffle.id)
        let users = export.split(separator: "\n").dropFirst().compactMap { UInt64($0.split(separator: ",").first ?? "") }
        #expect(users.count == batches * size && Set(users) == Set((1...UInt64(batches * size))))
        await udp.transport.close()
        await admin.transport.close()
        await s.shutdown()
        _ = dir
    }

    @Test func udpHonoursRetryAfterAndRefusesOversizeBatches() async throws {
        let (s, dir, admin) = try await Self.start { $0.admission.anonymous = RateLimit(ratePerSecond: 20, burst: 6) }
        let raffle = try await admin.createRaffle(title: "Paced", duration: .seconds(600))
        let udp = RaffleClient(transport: UDPTransport(host: "127.0.0.1", port: try #require(s.udpPort)))
        // Six batches of cost 3 at once against a burst of 6: four are throttled and come back later.
        let results = try await withThrowingTaskGroup(of: [EntryOutcome].self) { group in
            for k in UInt64(0)..<6 { group.addTask { try await udp.submit([Entry(userID: k * 2 + 1), Entry(userID: k * 2 + 2)], to: raffle.id) } }
            return try await group.reduce(into: [[EntryOutcome]]()) { $0.append($1) }
        }
        // Entered, each: a datagram re-sent after a lost or late ack is answered already_entered (§14).
        #expect(results.count == 6 && results.allSatisfy { $0.count == 2 && $0.allSatisfy(\.isEntered) })
        #expect(udp.attemptCount > 6, "throttled batches went back after the retry-after")
        do {
            _ = try await udp.submit((1...100).map { Entry(userID: $0 + 1_000) }, to: raffle.id)
            Issue.record("100 entries do not fit in a datagram")
        } catch let error as RaffleClientError {
            #expect(error.kind == .invalidRequest && error.message.contains("72 entries"), "\(error)")
        }
        await udp.transport.close()
        await admin.transport.close()
        await s.shutdown()
        _ = dir
    }

    @Test func udpToNobodyGivesAClearErrorAfterTheDeadline() async throws {
        var timing = UDPTransport.Timing()
        timing.initialTimeout = .milliseconds(20)
        timing.giveUpAfter = .milliseconds(300)
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.deadline = .seconds(1)
        config.backoff = Backoff(base: .milliseconds(10), cap: .milliseconds(50))
        let udp = RaffleClient(transport: UDPTransport(host: "127.0.0.1", port: 9, timing: timing), configuration: config)
        do {
            _ = try await udp.submit([Entry(userID: 1)], to: 1)
            Issue.record("nothing answers on port 9")
        } catch let error as RaffleClientError {
            #expect(error.kind == .deadlineExceeded || error.kind == .retryBudgetExhausted, "\(error)")
            #expect((error.underlying as? RaffleClientError)?.message.contains("no UDP reply") == true, "\(error)")
        }
        await udp.transport.close()
    }
}
