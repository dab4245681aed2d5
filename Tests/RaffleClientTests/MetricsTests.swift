import Foundation
import RaffleClient
import RaffleClientHTTP2
import RaffleClientSockets
import RaffleTestSupport
import RaffleWire
import Testing

/// `/metrics` as Prometheus (and an operator) expects it: counters end in `_total`, no gauge carries a
/// cumulative count, the standard `process_*` metrics are there, and acknowledged entries are counted
/// per transport (issue #16). Entries go in over all four transports of a real raffled.
@Suite("/metrics naming and content", .timeLimit(.minutes(1)))
struct MetricsTests {
    /// `# TYPE name kind` lines → kind by name, and the sample lines.
    static func parse(_ text: String) -> (types: [String: String], samples: [String]) {
        var types: [String: String] = [:]
        var samples: [String] = []
        for line in text.split(separator: "\n") {
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                if parts.count == 4 { types[String(parts[2])] = String(parts[3]) }
            } else if !line.hasPrefix("#") {
                samples.append(String(line))
            }
        }
        return (types, samples)
    }

    static func value(_ samples: [String], _ prefix: String) -> Double? {
        samples.first { $0.hasPrefix(prefix + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }

    @Test func countersEndInTotalProcessMetricsAndAcksByTransport() async throws {
        let (s, dir) = try await TestServer.start { $0.admission.clients = [.init(name: "partner", key: "partner-key-0123456789abcdef", rate: 1_000, burst: 2_000)] }
        let admin = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: .init(adminKey: testAdminKey))
        let raffle = try await admin.createRaffle(title: "Metrics", duration: .seconds(600)).id
        let partner = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: s.port), configuration: .init(apiKey: "partner-key-0123456789abcdef"))
        _ = try await partner.submit((1...3).map { Entry(userID: $0) }, to: raffle)
        let tcp = RaffleClient(transport: TCPTransport(host: "127.0.0.1", port: try #require(s.tcpPort)))
        _ = try await tcp.submit((10...11).map { Entry(userID: $0) }, to: raffle)
        let udp = RaffleClient(transport: UDPTransport(host: "127.0.0.1", port: try #require(s.udpPort)))
        _ = try await udp.submit([Entry(userID: 20)], to: raffle)
        let http1 = RaffleClient(transport: URLSessionTransport(host: "127.0.0.1", port: s.port, secure: false))
        _ = try await http1.submit((30...33).map { Entry(userID: $0) }, to: raffle)

        let reply = try await admin.transport.admin(method: "GET", path: "/metrics", body: nil, authorization: "Bearer \(testAdminKey)")
        let text = String(decoding: reply.body, as: UTF8.self)
        let (types, samples) = Self.parse(text)
        #expect(!types.isEmpty)
        for (name, kind) in types {
            if kind == "counter" { #expect(name.hasSuffix("_total"), "counter \(name) ends in _total") }
            if kind == "gauge" { #expect(!name.hasSuffix("_total"), "gauge \(name) does not look like a counter") }
        }
        #expect(types["raffled_client_throttled_batches_total"] == "counter", "the per-client throttled count is a counter")
        #expect(types["raffled_client_bucket_tokens"] == "gauge" && types["raffled_global_bucket_tokens"] == "gauge")
        #expect(types["raffled_bucket_tokens"] == nil, "no metric mixes the global bucket with client names")
        for (transport, n) in [("http2", 3.0), ("tcp", 2.0), ("udp", 1.0), ("http1", 4.0)] {
            #expect(Self.value(samples, "raffled_entries_acknowledged_total{transport=\"\(transport)\"}") == n, "\(transport): \(n)")
        }
        #expect((Self.value(samples, "process_resident_memory_bytes") ?? 0) > 1_000_000)
        #expect((Self.value(samples, "process_open_fds") ?? 0) > 3)
        #expect((Self.value(samples, "process_max_fds") ?? 0) >= (Self.value(samples, "process_open_fds") ?? 0))
        #expect((Self.value(samples, "process_cpu_seconds_total") ?? 0) > 0)
        let started = Self.value(samples, "process_start_time_seconds") ?? 0
        #expect(started > Date().timeIntervalSince1970 - 86_400 && started <= Date().timeIntervalSince1970 + 1, "start time: \(started)")
        #expect((Self.value(samples, "raffled_log_bytes") ?? 0) > 0, "the log's size on disk")
        for c in [admin, partner, tcp, udp, http1] { await c.transport.close() }
        await s.shutdown()
        _ = dir
    }
}
