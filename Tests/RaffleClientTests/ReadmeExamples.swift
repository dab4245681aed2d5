// The Swift examples of Clients/README.md, compiled with the tests so that they keep compiling.
// `ReadmeExamplesTests` checks that every example in the README appears here line for line (import
// lines aside): change one, change the other. Nothing here runs; the names the examples take as
// given (the app's user id, a partner's file, ...) are stubbed below.
import Foundation
import RaffleClient
import RaffleClientHTTP2
import RaffleClientSockets

// MARK: - What the examples take as given

private let currentUserID: UInt64 = 42
private let raffleID: UInt64 = 7
private let partnerKey = "partner-key-0123456789"
private let adminKey = "admin-key-0123456789"
private let path = "entries.csv"
private let entries = [Entry(userID: 1), Entry(userID: 2)]
private func showTicket() {}
private func showRaffleState(_ outcome: EntryOutcome) {}
private func showRetryLater(_ message: String) {}

/// A partner's entry file, read in batches.
private actor PartnerFile {
    init(_ path: String) {}
    func next(_ count: Int) throws -> [Entry]? { nil }
}

/// Counts outcomes.
private actor OutcomeTally {
    func add(_ outcomes: [EntryOutcome]) {}
}
private let tally = OutcomeTally()

// MARK: - The examples

private func mobileApp() async throws {
        let client = RaffleClient(transport: URLSessionTransport(baseURL: URL(string: "https://raffle.example.com")!))
        do {
            let outcome = try await client.enter(user: currentUserID, raffle: 7)   // coalesced with other calls
            if outcome.isEntered { showTicket() } else { showRaffleState(outcome) } // accepted or already entered
        } catch let error as RaffleClientError {
            showRetryLater(error.message)                                         // deadline, budget, or refused
        }
}

private func backendBatch() async throws {
        var config = RaffleClientConfiguration(apiKey: partnerKey)
        config.deadline = .seconds(60)
        let client = RaffleClient(transport: HTTP2Transport(host: "raffle.example.com", port: 8080), configuration: config)
        let outcomes = try await client.submit(entries, to: raffleID)             // one outcome per entry, in order
        _ = outcomes
}

private func bulkPartner() async throws {
        let client = RaffleClient(transport: HTTP2Transport(host: "raffle.example.com", port: 8080),
                                  configuration: RaffleClientConfiguration(apiKey: partnerKey))
        let stream = client.bulkStream(raffle: raffleID)
        let source = PartnerFile(path)                                     // an actor: next(n) -> [Entry]? (nil at the end)
        try await stream.send(batches: { try await source.next(1_000) }) { batch, outcomes in
            await tally.add(outcomes)                                      // each batch, once durable
        }                                                                  // 8 senders: never more than 8 batches in flight
        await stream.close()                                               // waits for the last acks
        await client.shutdown()
}

private func tlsAndAdmin() async throws {
        let transport = try HTTP2Transport(host: "raffle.example.com", port: 443,
                                           tls: HTTP2Transport.tlsConfiguration(caFile: "ca.pem"))   // caFile: nil = system store
        let admin = RaffleClient(transport: transport, configuration: RaffleClientConfiguration(adminKey: adminKey))
        let raffle = try await admin.createRaffle(title: "Sneaker drop", duration: .seconds(600), winners: 3)
        _ = raffle
}

private func rawTCPAndUDP() async throws {
        let pipe = RaffleClient(transport: TCPTransport(host: "raffle.example.com", port: 8081))   // frames only
        let stream = pipe.bulkStream(raffle: raffleID)        // a bulk stream on its own TCP connection
        let secure = RaffleClient(transport: try TCPTransport(host: "raffle.example.com", port: 8081,
                                                              tls: TCPTransport.tlsConfiguration(caFile: "ca.pem")))
        let udp = RaffleClient(transport: UDPTransport(host: "raffle.example.com", port: 8082))
        let outcome = try await udp.enter(user: currentUserID, raffle: raffleID)   // one datagram each way
        _ = (stream, secure, outcome)
}
