import Foundation
import RaffleClient
import RaffleClientHTTP2
import RaffleClientSockets
import RaffleCore
import RaffleServer
import RaffleTestSupport
import RaffleWire
import Testing

/// A raffled on 127.0.0.1 serving TLS with certificates from `scripts/dev-cert`.
struct TLSServer {
    let server: RaffleServer
    let data: TempDir
    let certs: TempDir

    var ca: String { certs.path + "/ca.pem" }

    static func start(expired: Bool = false, _ configure: (inout ServerConfiguration) -> Void = { _ in }) async throws -> TLSServer {
        let certs = TempDir()
        try await makeDevCertificates(in: certs.path, expired: expired)
        let (server, data) = try await TestServer.start { config in
            config.tls = TLSFiles(certificateChainPath: certs.path + "/server.pem", privateKeyPath: certs.path + "/server.key")
            configure(&config)
        }
        return TLSServer(server: server, data: data, certs: certs)
    }

    func client(caFile: String?, host: String = "127.0.0.1") throws -> RaffleClient {
        let transport = try HTTP2Transport(host: host, port: server.port, tls: HTTP2Transport.tlsConfiguration(caFile: caFile))
        return RaffleClient(transport: transport, configuration: .init(adminKey: testAdminKey))
    }
}

@Suite("TLS: ALPN h2 and http/1.1, certificates, reload", .timeLimit(.minutes(1)))
struct TLSTests {
    @Test func theSwiftClientEntersOverHTTP2OnTLS() async throws {
        let t = try await TLSServer.start()
        #expect(t.server.usesTLS)
        for host in ["127.0.0.1", "localhost"] {
            let client = try t.client(caFile: t.ca, host: host)
            let raffle = try await client.createRaffle(title: "TLS", duration: .seconds(600))
            #expect(try await client.enter(user: 42, raffle: raffle.id) == .accepted)
            #expect(try await client.enter(user: 42, raffle: raffle.id) == .alreadyEntered)
            #expect(try await client.raffle(raffle.id).entries == 1)
            await client.transport.close()
        }
        await t.server.shutdown()
    }

    @Test func curlNegotiatesH2AndHTTP1() async throws {
        let t = try await TLSServer.start()
        let url = "https://127.0.0.1:\(t.server.port)"
        let h2 = try await runCommand("curl", ["-s", "--cacert", t.ca, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", url + "/healthz"])
        #expect(h2.stdout == "2 200", "\(h2.stderr)")
        let h1 = try await runCommand("curl", ["-s", "--http1.1", "--cacert", t.ca, "-o", "/dev/null", "-w", "%{http_version} %{http_code}", url + "/readyz"])
        #expect(h1.stdout == "1.1 200", "\(h1.stderr)")
        // Entries over HTTP/1.1 on TLS, and an admin call with the key.
        let created = try await runCommand(
            "curl", ["-s", "--http1.1", "--cacert", t.ca, "-H", "authorization: Bearer \(testAdminKey)", "-d", #"{"title":"curl","durationSeconds":60}"#, url + "/v1/raffles"])
        let raffle = try JSONDecoder().decode(RaffleInfo.self, from: Data(created.stdout.utf8)).id
        let body = t.certs.path + "/batch.bin"
        try Data(batchFrame(raffle: raffle, users: [1, 2, 3], requestID: 9)).write(to: URL(fileURLWithPath: body))
        let posted = try await runCommand(
            "curl", ["-s", "--http1.1", "--cacert", t.ca, "-H", "content-type: \(Wire.contentType)", "--data-binary", "@" + body, "-o", body + ".ack", "-w", "%{http_code}", url + "/v1/entries"])
        #expect(posted.stdout == "200")
        let ack = try decodeFrames(Array(try Data(contentsOf: URL(fileURLWithPath: body + ".ack"))))
        if case .batchAck(_, let outcomes)? = ack.first?.body { #expect(outcomes == [.accepted, .accepted, .accepted]) } else { Issue.record("no ack: \(ack)") }
        // Without the CA, curl refuses the certificate.
        #expect(try await runCommand("curl", ["-s", url + "/healthz"]).status == 60)
        await t.server.shutdown()
    }

    @Test func pythonsSSLNegotiatesBothAndRawTCPSpeaksTLS() async throws {
        let t = try await TLSServer.start()
        let client = try t.client(caFile: t.ca)
        let raffle = try await client.createRaffle(title: "raw", duration: .seconds(600)).id
        await client.transport.close()
        let frame = batchFrame(raffle: raffle, users: [7, 8], requestID: 5).map { String(format: "%02x", $0) }.joined()
        let script = """
            import json, socket, ssl, sys
            ca, port, tcp, frame = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), bytes.fromhex(sys.argv[4])
            out = {}
            for alpn in (["h2", "http/1.1"], ["http/1.1"]):
                ctx = ssl.create_default_context(cafile=ca)
                ctx.set_alpn_protocols(alpn)
                with socket.create_connection(("127.0.0.1", port)) as s, ctx.wrap_socket(s, server_hostname="localhost") as t:
                    out[",".join(alpn)] = t.selected_alpn_protocol()
                    if t.selected_alpn_protocol() == "http/1.1":
                        t.sendall(b"GET /healthz HTTP/1.1\\r\\nhost: localhost\\r\\nconnection: close\\r\\n\\r\\n")
                        out["status"] = t.recv(100).split(b"\\r\\n")[0].decode()
            ctx = ssl.create_default_context(cafile=ca)
            with socket.create_connection(("127.0.0.1", tcp)) as s, ctx.wrap_socket(s, server_hostname="localhost") as t:
                t.sendall(frame)
                reply = b""
                while len(reply) < 24:
                    reply += t.recv(4096)
                length = int.from_bytes(reply[8:12], "little")
                while len(reply) < 24 + length:
                    reply += t.recv(4096)
                out["raw"] = reply[:24 + length].hex()
            print(json.dumps(out))
            """
        let r = try await runCommand("python3", ["-c", script, t.ca, String(t.server.port), String(try #require(t.server.tcpPort)), frame])
        #expect(r.status == 0, "\(r.stderr)")
        let out = try JSONDecoder().decode([String: String].self, from: Data(r.stdout.utf8))
        #expect(out["h2,http/1.1"] == "h2")
        #expect(out["http/1.1"] == "http/1.1")
        #expect(out["status"] == "HTTP/1.1 200 OK")
        let raw = try decodeFrames(Draw.bytes(hex: try #require(out["raw"])) ?? [])
        #expect(raw.first?.requestID == 5)
        if case .batchAck(_, let outcomes)? = raw.first?.body { #expect(outcomes == [.accepted, .accepted]) } else { Issue.record("raw TCP over TLS: no ack in \(raw)") }
        await t.server.shutdown()
    }

    @Test func theSwiftTCPTransportSpeaksTLSToTheRawPort() async throws {
        let t = try await TLSServer.start()
        let admin = try t.client(caFile: t.ca)
        let raffle = try await admin.createRaffle(title: "TCP over TLS", duration: .seconds(600)).id
        let tcp = RaffleClient(
            transport: try TCPTransport(
                host: "localhost", port: try #require(t.server.tcpPort), tls: TCPTransport.tlsConfiguration(caFile: t.ca)))
        #expect(try await tcp.submit([Entry(userID: 1), Entry(userID: 2)], to: raffle) == [.accepted, .accepted])
        let stream = tcp.bulkStream(raffle: raffle)
        #expect(try await stream.send([Entry(userID: 2), Entry(userID: 3)]) == [.alreadyEntered, .accepted])
        await stream.close()
        #expect(try await admin.raffle(raffle).entries == 3)
        // Without the CA the handshake fails and the call says so.
        var config = RaffleClientConfiguration()
        config.deadline = .seconds(1)
        let stranger = RaffleClient(
            transport: try TCPTransport(host: "localhost", port: try #require(t.server.tcpPort), tls: TCPTransport.tlsConfiguration()),
            configuration: config)
        await #expect(throws: RaffleClientError.self) { _ = try await stranger.submit([Entry(userID: 9)], to: raffle) }
        await tcp.shutdown()
        await admin.shutdown()
        await t.server.shutdown()
    }

    @Test func untrustedAndExpiredCertificatesGiveClearErrors() async throws {
        let t = try await TLSServer.start()
        let stranger = try t.client(caFile: nil)
        do {
            _ = try await stranger.raffles()
            Issue.record("a certificate from an unknown CA was accepted")
        } catch {
            #expect("\(error)".contains("not signed by a trusted CA"), "\(error)")
        }
        // A plaintext HTTP/2 client on the TLS port gets nowhere, and the server goes on.
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.deadline = .seconds(2)
        let plain = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: t.server.port), configuration: config)
        await #expect(throws: (any Error).self) { _ = try await plain.raffles() }
        #expect(try await t.client(caFile: t.ca).raffles().isEmpty)
        await t.server.shutdown()

        let old = try await TLSServer.start(expired: true)
        do {
            _ = try await old.client(caFile: old.ca).raffles()
            Issue.record("an expired certificate was accepted")
        } catch {
            #expect("\(error)".contains("expired on"), "\(error)")
        }
        await old.server.shutdown()
    }

    @Test func reloadingTheCertificateKeepsARunningBulkStream() async throws {
        let t = try await TLSServer.start()
        var config = RaffleClientConfiguration(adminKey: testAdminKey)
        config.streamWindow = 2
        let client = RaffleClient(
            transport: try HTTP2Transport(host: "127.0.0.1", port: t.server.port, tls: HTTP2Transport.tlsConfiguration(caFile: t.ca)),
            configuration: config)
        let raffle = try await client.createRaffle(title: "Reload", duration: .seconds(600)).id
        let stream = client.bulkStream(raffle: raffle)
        for k in 0..<5 { #expect(try await stream.send(BulkStreamTests.batch(k, size: 100)).allSatisfy { $0 == .accepted }) }
        // A new CA and certificate replace the files; reload (what SIGHUP does in raffled).
        let next = TempDir()
        try await makeDevCertificates(in: next.path)
        for file in ["server.pem", "server.key"] {
            try FileManager.default.removeItem(atPath: t.certs.path + "/" + file)
            try FileManager.default.copyItem(atPath: next.path + "/" + file, toPath: t.certs.path + "/" + file)
        }
        let loaded = try t.server.reloadTLS()
        #expect(loaded.chainLength == 2 && !loaded.expired)
        // The stream opened before the reload goes on, on the same connection.
        for k in 5..<10 { #expect(try await stream.send(BulkStreamTests.batch(k, size: 100)).allSatisfy { $0 == .accepted }) }
        #expect(stream.streamsOpened == 1, "no reconnect: the reload dropped nothing")
        // New connections get the new certificate: the old CA no longer vouches for it.
        await #expect(throws: (any Error).self) { _ = try await t.client(caFile: t.ca).raffles() }
        #expect(try await t.client(caFile: next.path + "/ca.pem").raffle(raffle).entries == 1_000)
        // A broken file on reload keeps the certificate in use.
        try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: t.certs.path + "/server.pem"))
        #expect(throws: TLSSetupError.self) { try t.server.reloadTLS() }
        #expect(try await t.client(caFile: next.path + "/ca.pem").raffles().count == 1)
        await stream.close()
        await client.transport.close()
        await t.server.shutdown()
    }

    @Test func theCLIWorksAgainstASelfSignedServerWithCAFile() async throws {
        let t = try await TLSServer.start()
        let at = ["--server", "https://127.0.0.1:\(t.server.port)", "--admin-key", testAdminKey]
        let created = try await CLIRun.raffle(["create"] + at + ["--ca-file", t.ca, "--title", "CLI TLS", "--duration", "10m", "--json"])
        #expect(created.status == 0, "\(created.stderr)")
        let id = try JSONDecoder().decode(RaffleInfo.self, from: Data(created.stdout.utf8)).id
        let submitted = try await CLIRun.raffle(["submit"] + at + ["--ca-file", t.ca, String(id), "-"], stdin: "1\n2\n3\n")
        #expect(submitted.status == 0, "\(submitted.stderr)")
        let refused = try await CLIRun.raffle(["list"] + at)
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("not signed by a trusted CA"), "\(refused.stderr)")
        await t.server.shutdown()
    }
}
