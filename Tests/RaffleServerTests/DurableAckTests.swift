import Foundation
import Logging
import NIOCore
import RaffleCore
import RaffleHTTP2
import RaffleHTTP2Client
import RaffleLedger
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// The durable-ack rule on every transport, with the real local ledger whose log is held back:
/// nothing is acknowledged until the log has made it durable.
@Suite("No transport acknowledges before the log commits", .timeLimit(.minutes(1)))
struct DurableAckTests {
    @Test func everyTransportWaitsForTheLog() async throws {
        let dir = TempDir()
        let ledger = try LocalLedger(directory: dir.path, startLog: false)  // nothing durable until log.start()
        let server = try await RaffleServer.start(configuration: .forTests(), ledger: ledger, logger: .quiet("durable-ack-test"))
        guard case .success(let (info, _)) = ledger.createRaffle(RaffleSpec(title: "durable", opensAt: 0, closesAt: Int64.max), now: 0) else {
            throw TestSupportError("no raffle")
        }
        let raffle = info.id

        // One batch on each transport, while the log holds everything back.
        let h2 = try await HTTP2Client.connect(host: "127.0.0.1", port: server.port, group: ServerFixture.group)
        let posted = Task { try await h2.request(method: "POST", path: Wire.entriesPath, headers: [framesType], body: batchFrame(raffle: raffle, users: [1], requestID: 1)) }
        let h1 = try RawSocket(port: server.port)
        h1.send(http1("POST", "/v1/entries", headers: [framesType], body: batchFrame(raffle: raffle, users: [2], requestID: 2)))
        let tcp = try FrameSocket(port: try #require(server.tcpPort))
        tcp.send(batchFrame(raffle: raffle, users: [3], requestID: 3))
        let udp = DatagramSocket(port: try #require(server.udpPort))
        udp.send(try checksummed(Frame(requestID: 4, body: .entryBatch(raffleID: raffle, entries: [Entry(userID: 4)]))))

        for _ in 0..<200 where ledger.stats().entries < 4 { try await Task.sleep(for: .milliseconds(5)) }
        #expect(ledger.stats().entries == 4, "every batch was admitted")
        #expect(h1.readBytes(for: 0.2).bytes.isEmpty, "HTTP/1.1: no response before the log commits")
        #expect(tcp.read(frames: 1, for: 0.2).frames.isEmpty, "raw TCP: no ack before the log commits")
        #expect(udp.receive() == nil, "UDP: no ack before the log commits")
        #expect(!posted.isCancelled)

        ledger.log.start()
        let response = try await posted.value
        #expect(try decodeFrames(Array(buffer: response.body)).first?.outcomes == [.accepted], "HTTP/2: acknowledged once durable")
        let (bytes, _) = h1.readBytes(for: 5) { HTTP1Response.parseAll($0).count >= 1 }
        let h1Body = try #require(HTTP1Response.parseAll(bytes).first?.body)
        #expect(try decodeFrames(h1Body).first?.outcomes == [.accepted], "HTTP/1.1: acknowledged once durable")
        #expect(tcp.read(frames: 1).frames.first?.outcomes == [.accepted], "raw TCP: acknowledged once durable")
        let datagram = try #require(udp.receive())
        #expect(try FrameDecoder(receiver: .client).decodeAll(datagram).first?.outcomes == [.accepted], "UDP: acknowledged once durable")
        await h2.close()
        await server.shutdown()
    }
}
