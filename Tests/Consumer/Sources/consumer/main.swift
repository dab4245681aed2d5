// A tiny app: one import, the URLSession transport, the calls an app makes.
// Usage: consumer BASE_URL ADMIN_KEY      (e.g. consumer https://127.0.0.1:8443 $(cat raffle-data/admin.key))
import Foundation
import RaffleClient

let arguments = CommandLine.arguments
guard arguments.count == 3, let base = URL(string: arguments[1]) else {
    print("usage: consumer BASE_URL ADMIN_KEY")
    exit(2)
}
let client = RaffleClient(transport: URLSessionTransport(baseURL: base), configuration: RaffleClientConfiguration(adminKey: arguments[2]))
do {
    let raffle = try await client.createRaffle(title: "consumer", duration: .seconds(600), winners: 1)
    let first = try await client.enter(user: 4_242, raffle: raffle.id)
    let again = try await client.enter(user: 4_242, raffle: raffle.id)
    let batch = try await client.submit([Entry(userID: 1), Entry(userID: 2)], to: raffle.id)
    let closed = try await client.close(raffle.id)
    print("raffle \(raffle.id): first \(first), again \(again), batch \(batch), entries \(closed.entries), winners \(closed.draw?.winners ?? [])")
    guard first == .accepted, again == .alreadyEntered, closed.entries == 3, closed.draw?.winners.count == 1 else {
        print("consumer: unexpected answers")
        exit(1)
    }
    await client.transport.close()
    print("consumer: ok")
} catch {
    print("consumer: \(error)")
    exit(1)
}
