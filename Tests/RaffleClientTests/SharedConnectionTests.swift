import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
@testable import RaffleClient
import RaffleClientHTTP2
import RaffleClientSockets
import RaffleServer
import RaffleTestSupport
import Testing

/// One connect for all the callers that need a connection at once (issue #18: a drop's first
/// second opened a socket per call until the bench ran out of file descriptors and trapped).
@Suite("Shared connection: one connect at a time", .timeLimit(.minutes(1)))
struct SharedConnectionTests {
    final class Fake: Sendable {
        let id: Int
        init(_ id: Int) { self.id = id }
    }

    @Test func concurrentCallersShareOneConnect() async throws {
        let slot = SharedConnection<Fake>()
        let connects = Locked<Int>(0)
        let connect: @Sendable () async throws -> Fake = {
            let n = connects.withLock { n -> Int in n += 1; return n }
            try await Task.sleep(for: .milliseconds(50))
            return Fake(n)
        }
        let ids = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<500 { group.addTask { try await slot.get(usable: { _ in true }, connect: connect).id } }
            return try await group.reduce(into: Set<Int>()) { $0.insert($1) }
        }
        #expect(connects.withLock { $0 } == 1 && ids == [1], "500 callers, one connect")
        // A dead connection is replaced once, however many notice it.
        let again = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<100 { group.addTask { try await slot.get(usable: { $0.id != 1 }, connect: connect).id } }
            return try await group.reduce(into: Set<Int>()) { $0.insert($1) }
        }
        #expect(again == [2] && connects.withLock { $0 } == 2)
    }

    @Test func aFailedConnectIsToldToEveryWaiterAndTheNextCallTriesAgain() async throws {
        struct Refused: Error {}
        let slot = SharedConnection<Fake>()
        let connects = Locked<Int>(0)
        let failing: @Sendable () async throws -> Fake = {
            connects.withLock { $0 += 1 }
            try await Task.sleep(for: .milliseconds(20))
            throw Refused()
        }
        let failures = await withTaskGroup(of: Bool.self) { group in
            for _ in 0..<50 { group.addTask { (try? await slot.get(usable: { _ in true }, connect: failing)) == nil } }
            return await group.reduce(0) { $0 + ($1 ? 1 : 0) }
        }
        #expect(failures == 50 && connects.withLock { $0 } == 1)
        let fake = try await slot.get(usable: { _ in true }) { Fake(7) }
        #expect(fake.id == 7, "after a failure the next call connects again")
        #expect(slot.forget(fake) && slot.take() == nil)
    }

    @Test func aDropsFirstSecondOpensOneConnectionPerTransport() async throws {
        let (server, dir) = try await TestServer.start()
        _ = dir
        let admin = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: server.port), configuration: .init(adminKey: testAdminKey))
        let raffle = try await admin.createRaffle(title: "herd", duration: .seconds(600))
        await admin.shutdown()
        let before = try await connectionsOpened(server)
        for transport in [HTTP2Transport(host: "127.0.0.1", port: server.port) as any RaffleTransport, TCPTransport(host: "127.0.0.1", port: server.tcpPort ?? 0)] {
            let client = RaffleClient(transport: transport)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for user in UInt64(1)...1_000 { group.addTask { _ = try await client.submit([Entry(userID: user)], to: raffle.id) } }
                try await group.waitForAll()
            }
            await client.shutdown()
        }
        let opened = try await connectionsOpened(server) - before
        #expect(opened <= 4, "1,000 users at once on each of two fresh transports: \(opened) connections (one each, and the probe's)")
        await server.shutdown()
    }

    /// `raffled_connections_total` from the server's metrics.
    func connectionsOpened(_ server: RaffleServer) async throws -> Int {
        // Over HTTP/1.1 (URLSession): one connection of the probe's own.
        let (data, _) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(server.port)/metrics")!)
        let text = String(decoding: data, as: UTF8.self)
        let line = text.split(separator: "\n").first { $0.hasPrefix("raffled_connections_total ") }
        return Int(Double(line?.split(separator: " ").last ?? "") ?? -1)
    }
}
