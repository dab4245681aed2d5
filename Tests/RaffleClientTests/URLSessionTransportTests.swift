import Foundation
import RaffleClient
import RaffleCore
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

@Suite("URLSessionTransport against a real raffled on 127.0.0.1", .timeLimit(.minutes(1)))
struct URLSessionTransportTests {
    @Test func entersSubmitsStreamsAndCallsTheAdminAPI() async throws {
        let (s, dir) = try await TestServer.start()
        _ = dir
        // Plaintext here (Linux's URLSession trusts only the system store; TLS is the consumer check's).
        let client = RaffleClient(
            transport: URLSessionTransport(host: "127.0.0.1", port: s.port, secure: false), configuration: .init(adminKey: testAdminKey))
        let raffle = try await client.createRaffle(title: "URLSession", duration: .seconds(600), winners: 1)
        #expect(try await client.enter(user: 7, raffle: raffle.id) == .accepted)
        #expect(try await client.enter(user: 7, raffle: raffle.id) == .alreadyEntered)
        let outcomes = try await client.submit([Entry(userID: 8), Entry(userID: 9), Entry(userID: 7)], to: raffle.id)
        #expect(outcomes == [.accepted, .accepted, .alreadyEntered])
        // A bulk stream: one request per batch, acks in order.
        let stream = client.bulkStream(raffle: raffle.id)
        for k in 0..<6 {
            let batch = (0..<50).map { Entry(userID: UInt64(1_000 + k * 50 + $0)) }
            #expect(try await stream.send(batch).allSatisfy { $0 == .accepted })
        }
        await stream.close()
        #expect(try await client.raffle(raffle.id).entries == 3 + 300)
        #expect(try await client.export(raffle.id).split(separator: "\n").count == 1 + 303)
        // Admin calls without the key are refused with the server's status.
        let anonymous = RaffleClient(transport: URLSessionTransport(host: "127.0.0.1", port: s.port, secure: false))
        await #expect(throws: RaffleClientError.self) { _ = try await anonymous.close(raffle.id) }
        #expect(try await anonymous.raffle(raffle.id).entries == 303, "public reads need no key")
        await client.transport.close()
        await anonymous.transport.close()
        await s.shutdown()
    }

    @Test func noServerIsAConnectionFailure() async throws {
        var config = RaffleClientConfiguration()
        config.deadline = .milliseconds(300)
        let client = RaffleClient(transport: URLSessionTransport(host: "127.0.0.1", port: 1, secure: false), configuration: config)
        do {
            _ = try await client.enter(user: 1, raffle: 1)
            Issue.record("entered with no server")
        } catch let error as RaffleClientError {
            #expect(error.kind == .deadlineExceeded || error.kind == .retryBudgetExhausted, "\(error)")
            #expect("\(error)".contains("127.0.0.1:1"), "\(error)")
        }
    }
}
