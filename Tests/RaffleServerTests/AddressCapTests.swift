import Foundation
import NIOCore
@testable import RaffleServer
import RaffleTestSupport
import Testing

/// The per-address connection limits (issue #18: thousands of idle connections from one address,
/// floods that reconnect each time they are cut off).
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
        #expect(cap.take(a) == nil && cap.take(a) == nil && cap.take(a) == .open && cap.take(b) == nil)
        cap.release(a)
        #expect(cap.take(a) == nil && cap.count(a) == 2)
        let v6a = try SocketAddress(ipAddress: "2001:db8::1", port: 1)
        let v6b = try SocketAddress(ipAddress: "2001:db8::ffff", port: 2)
        #expect(cap.take(v6a) == nil && cap.take(v6b) == nil && cap.take(v6a) == .open, "one /64 is one host")
        #expect(AddressCap(limit: 0).take(a) == nil, "0: no cap")
    }

    /// New connections per second per address: a burst of twice the rate, then one per 1/rate s;
    /// other addresses unaffected; addresses with nothing open and no debt are forgotten.
    @Test func newConnectionsPerAddressAreRateLimited() throws {
        let cap = AddressCap(limit: 0, rate: 10)  // burst 20, then one per 100 ms
        let a = try SocketAddress(ipAddress: "10.0.0.1", port: 1)
        let b = try SocketAddress(ipAddress: "10.0.0.2", port: 1)
        let t: UInt64 = 1_000_000_000_000
        var admitted = 0
        for _ in 0..<30 where cap.take(a, now: t) == nil { admitted += 1 }
        #expect(admitted == 20, "the burst")
        #expect(cap.take(a, now: t) == .rate)
        #expect(cap.take(b, now: t) == nil, "another address has its own budget")
        #expect(cap.take(a, now: t + 50_000_000) == .rate && cap.take(a, now: t + 100_000_000) == nil, "one per 100 ms")
        for _ in 0..<21 { cap.release(a, now: t) }
        cap.release(b, now: t + 1_000_000_000)
        #expect(cap.remembered == 1, "a, with rate debt left, is kept; b, paid up, is forgotten")
        cap.release(a, now: t + 10_000_000_000)
        _ = cap.take(b, now: t + 10_000_000_000)
        cap.release(b, now: t + 10_000_000_000)
        #expect(cap.remembered <= 1)
        // Many addresses passing through: memory stays bounded by the sweep.
        for i in 0..<20_000 {
            let addr = try SocketAddress(ipAddress: "10.1.\(i / 250).\(i % 250)", port: 1)
            _ = cap.take(addr, now: t + 20_000_000_000 + UInt64(i) * 1_000_000_000)
            cap.release(addr, now: t + 20_000_000_000 + UInt64(i) * 1_000_000_000)
        }
        #expect(cap.remembered < 5_000)
    }

    @Test func aReconnectingFloodIsRefusedOverTheRate() async throws {
        let f = try await ServerFixture.start {
            $0.maxNewConnectionsPerAddressPerSecond = 5  // burst 10
        }
        // The fixture's client used one; then connect and close as fast as possible.
        var refused = 0
        for _ in 0..<30 {
            let s = try RawSocket(port: f.server.port)
            s.send(RawHTTP2.preface + RawHTTP2.settings())
            let (frames, closed) = s.read(for: 1) { $0.contains { $0.type == 4 } }
            if closed && !frames.contains(where: { $0.type == 4 }) { refused += 1 }
        }
        #expect(refused >= 15, "most of 30 quick connections over a burst of 10 are closed on arrival (\(refused))")
        let metrics = String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
        #expect(metrics.contains(#"raffled_connections_refused_total{reason="per_address_rate"} \#(refused)"#))
        await f.stop()
    }
}
