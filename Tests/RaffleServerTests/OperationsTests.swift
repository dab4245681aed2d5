import Foundation
import RaffleHTTP2Client
import RaffleTestSupport
import Testing

/// What an operator configures and reads: `RAFFLED_*` variables, `--log-format json`, and a peer
/// address on every connection's log lines (issue #16). Real raffled processes on 127.0.0.1.
@Suite("Operating raffled: environment, JSON logs, peers in abuse lines", .timeLimit(.minutes(1)))
struct OperationsTests {
    /// Log lines written so far, each parsed as a JSON object (a line that is not one fails the test).
    func jsonLines(_ path: String) -> [[String: Any]] {
        let text = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        return text.split(separator: "\n").map { line in
            let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object != nil, "not a JSON object: \(line)")
            return object ?? [:]
        }
    }

    @Test func environmentConfiguresServeAndJSONLogLinesNameThePeer() async throws {
        let dir = TempDir()
        let p = try await RaffledProcess.launch(
            data: dir.path + "/data", extra: ["--log-level", "info"],
            environment: [
                "RAFFLED_LOG_FORMAT": "json", "RAFFLED_TCP_PORT": "-1", "RAFFLED_UDP_PORT": "-1",
                "RAFFLED_LOG_LEVEL": "critical",  // the command line's --log-level info wins
            ])
        #expect(p.banner.contains("raw TCP (off) and UDP (off)"), "RAFFLED_TCP_PORT and RAFFLED_UDP_PORT applied: \(p.banner)")
        // A never-reading PING flood: cut off with GOAWAY(ENHANCE_YOUR_CALM), logged with the peer.
        let s = try RawSocket(port: p.port)
        s.send(RawHTTP2.preface + RawHTTP2.settings() + RawHTTP2.settingsAck)
        s.send(Array((0..<1_200).map { _ in RawHTTP2.frame(type: 6, stream: 0, [1, 2, 3, 4, 5, 6, 7, 8]) }.joined()))
        let (frames, _) = s.read { $0.contains { $0.type == 7 } }
        #expect(frames.contains { $0.type == 7 })
        var calm: [String: Any]?
        let deadline = ContinuousClock.now + .seconds(5)
        while calm == nil && ContinuousClock.now < deadline {
            calm = jsonLines(p.errorsPath).first { ($0["message"] as? String)?.contains("ENHANCE_YOUR_CALM") == true }
            if calm == nil { try await Task.sleep(for: .milliseconds(50)) }
        }
        #expect((calm?["peer"] as? String)?.contains("127.0.0.1") == true, "the cut-off names the peer: \(String(describing: calm))")
        #expect(calm?["level"] as? String == "info" && calm?["ts"] is String && calm?["source"] as? String == "RaffleServer")
        let lines = jsonLines(p.errorsPath)
        #expect(lines.contains { $0["message"] as? String == "ledger ready" }, "info lines at --log-level info, all JSON")
        _ = p.terminate()
    }

    @Test func unknownOrMalformedVariablesStopStartWithTheirName() async throws {
        let raffled = RaffledProcess.executable.path
        let unknown = try await runCommand(raffled, ["--port", "0"], environment: ["RAFFLED_NO_SUCH_OPTION": "1"], timeout: 20)
        #expect(unknown.status != 0 && unknown.stderr.contains("RAFFLED_NO_SUCH_OPTION") && unknown.stderr.contains("--no-such-option"))
        let flag = try await runCommand(raffled, ["--port", "0"], environment: ["RAFFLED_REUSE_PORT": "maybe"], timeout: 20)
        #expect(flag.status != 0 && flag.stderr.contains("RAFFLED_REUSE_PORT=maybe"))
        let format = try await runCommand(raffled, ["--port", "0", "--log-format", "xml"], timeout: 20)
        #expect(format.status != 0 && format.stderr.contains("log-format"))
        // The group-commit interval: out of range, from the command line or the environment.
        let interval = try await runCommand(raffled, ["--port", "0", "--commit-interval-us=-1"], timeout: 20)
        #expect(interval.status != 0 && interval.stderr.contains("--commit-interval-us must be 0 (no pacing) to 1000000"))
        let slow = try await runCommand(raffled, ["--port", "0"], environment: ["RAFFLED_COMMIT_INTERVAL_US": "5000000"], timeout: 20)
        #expect(slow.status != 0 && slow.stderr.contains("--commit-interval-us must be"))
        // How far ahead the log writes zeros: out of range, likewise.
        let zeros = try await runCommand(raffled, ["--port", "0", "--log-zero-fill-kib", "100000"], timeout: 20)
        #expect(zeros.status != 0 && zeros.stderr.contains("--log-zero-fill-kib must be 0 (off) to 65536"))
        let negative = try await runCommand(raffled, ["--port", "0"], environment: ["RAFFLED_LOG_ZERO_FILL_KIB": "-1"], timeout: 20)
        #expect(negative.status != 0 && negative.stderr.contains("--log-zero-fill-kib must be"))
    }
}
