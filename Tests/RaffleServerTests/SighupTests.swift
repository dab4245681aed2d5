import Foundation
import NIOSSL
import RaffleHTTP2
import RaffleHTTP2Client
import RaffleTestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

@Suite("raffled over TLS: SIGHUP reloads the certificate", .timeLimit(.minutes(1)))
struct SighupTests {
    func connect(_ port: Int, ca: String) async throws -> HTTP2Client {
        let tls = try NIOSSLContext(configuration: HTTP2Client.clientTLSConfiguration(caFile: ca))
        return try await HTTP2Client.connect(host: "127.0.0.1", port: port, group: ServerFixture.group, tls: tls)
    }

    @Test func sighupSwapsTheCertificateForNewConnectionsAndDropsNone() async throws {
        let dir = TempDir(), first = TempDir(), second = TempDir()
        try await makeDevCertificates(in: first.path)
        try await makeDevCertificates(in: second.path)
        let cert = dir.path + "/server.pem", key = dir.path + "/server.key"
        for file in ["server.pem", "server.key"] { try FileManager.default.copyItem(atPath: first.path + "/" + file, toPath: dir.path + "/" + file) }
        let server = try RaffledProcess(data: dir.path + "/data", extra: ["--tls-cert", cert, "--tls-key", key])
        let open = try await connect(server.port, ca: first.path + "/ca.pem")
        #expect(try await open.request(method: "GET", path: "/healthz").status == 200)

        for file in ["server.pem", "server.key"] {
            try FileManager.default.removeItem(atPath: dir.path + "/" + file)
            try FileManager.default.copyItem(atPath: second.path + "/" + file, toPath: dir.path + "/" + file)
        }
        kill(server.process.processIdentifier, SIGHUP)
        // The reload happens on the server's own time: poll (bounded) until a new connection sees it.
        var reloaded = false
        for _ in 0..<50 where !reloaded {
            if let fresh = try? await connect(server.port, ca: second.path + "/ca.pem") {
                reloaded = try await fresh.request(method: "GET", path: "/readyz").status == 200
                await fresh.close()
            } else {
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        #expect(reloaded, "after SIGHUP new connections get the new certificate")
        await #expect(throws: HTTP2ClientError.self) { _ = try await connect(server.port, ca: first.path + "/ca.pem") }
        #expect(try await open.request(method: "GET", path: "/healthz").status == 200, "the connection made before the reload is still served")
        await open.close()
        #expect(server.terminate() == 0)
    }
}
