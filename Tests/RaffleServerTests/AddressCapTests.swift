import Foundation
import NIOCore
@testable import RaffleServer
import RaffleTestSupport
import Testing

/// The per-address connection cap (issue #18: thousands of idle connections from one address).
@Suite("Per-address connection cap", .timeLimit(.minutes(1)))
struct AddressCapTests {
    @Test func oneAddressGetsAtMostTheCapAcrossHTTPAndRawTCP() async throws {
        let f = try await ServerFixture.start { $0.maxConnectionsPerAddress = 20 }
        let tcpPort = try #require(f.server.tcpPort)
        // The fixture's client holds one; 10 on the main port and 9 on raw TCP fill the cap.
        var held = try (0..<10).map { _ in try RawSocket(port: f.server.port) }
        held += try (0..<9).map { _ in try RawSocket(port: tcpPort) }
        // They send nothing: idle connections, as an attacker holding places would keep them.
        try await Task.sleep(for: .milliseconds(200))
        let over = try (0..<5).map { i in try RawSocket(port: i % 2 == 0 ? f.server.port : tcpPort) }
        let refused = over.map { $0.readBytes(for: 2).closed }
        #expect(refused.allSatisfy { $0 }, "connections over the cap are closed as they arrive")
        // Closing some gives their places back.
        held.removeFirst(3)
        try await Task.sleep(for: .milliseconds(200))
        let again = try RawSocket(port: f.server.port)
        again.send(RawHTTP2.preface + RawHTTP2.settings())
        let (frames, closed) = again.read(for: 2) { $0.contains { $0.type == 4 } }
        #expect(!closed && frames.contains { $0.type == 4 }, "a freed place is taken by the next connection")
        let metrics = String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
        #expect(metrics.contains(#"raffled_connections_refused_total{reason="per_address_cap"} 5"#))
        _ = held
        await f.stop()
    }

    @Test func addressesAreCountedApartAndIPv6By64() throws {
        let cap = AddressCap(limit: 2)
        let a = try SocketAddress(ipAddress: "10.0.0.1", port: 1)
        let b = try SocketAddress(ipAddress: "10.0.0.2", port: 1)
        #expect(cap.take(a) && cap.take(a) && !cap.take(a) && cap.take(b))
        cap.release(a)
        #expect(cap.take(a) && cap.count(a) == 2)
        let v6a = try SocketAddress(ipAddress: "2001:db8::1", port: 1)
        let v6b = try SocketAddress(ipAddress: "2001:db8::ffff", port: 2)
        #expect(cap.take(v6a) && cap.take(v6b) && !cap.take(v6a), "one /64 is one host")
        #expect(AddressCap(limit: 0).take(a), "0: no cap")
    }
}
