import Foundation
import RaffleAdmission
import Logging
import RaffleCore
import RaffleServer
import RaffleTestSupport
import Testing

/// Runs the built `raffle` executable (it sits beside the test bundle) and collects its output.
struct CLIRun {
    var status: Int32
    var stdout: String
    var stderr: String

    static var executable: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("raffle")
    }

    static func raffle(_ arguments: [String], stdin: String? = nil) async throws -> CLIRun {
        let r = try await runCommand(executable.path, arguments, stdin: stdin)
        return CLIRun(status: r.status, stdout: r.stdout, stderr: r.stderr)
    }
}

@Suite("The raffle command line against a real raffled on 127.0.0.1", .timeLimit(.minutes(1)))
struct CLITests {
    static func server(_ dir: TempDir) async throws -> RaffleServer {
        try await TestServer.start(in: dir).0
    }

    /// `raffled --help` shows the server's options (the README sends operators there), `raffled
    /// help verify` the other command's, and every binary says which build it is.
    @Test func helpShowsTheServerOptionsAndVersionsNameTheBuild() async throws {
        let raffled = CLIRun.executable.deletingLastPathComponent().appendingPathComponent("raffled").path
        let help = try await runCommand(raffled, ["--help"])
        #expect(help.status == 0)
        for option in ["--port", "--data", "--durability", "--tls-cert", "--admin-keys", "OTHER COMMANDS", "verify", "backup"] {
            #expect(help.stdout.contains(option), "raffled --help mentions \(option)")
        }
        let verify = try await runCommand(raffled, ["help", "verify"])
        #expect(verify.status == 0 && verify.stdout.contains("USAGE: raffled verify"))
        for (binary, name) in [(raffled, "raffled"), (CLIRun.executable.path, "raffle")] {
            let version = try await runCommand(binary, ["--version"])
            let words = version.stdout.split(separator: " ")
            #expect(version.status == 0 && words.count == 2 && words.first == Substring(name), "\(name) --version: \(version.stdout)")
            #expect((words.last?.count ?? 0) >= 7, "a git revision (or 'unknown'): \(version.stdout)")
        }
    }

    @Test func createSubmitCloseDrawVerifyRoundTrip() async throws {
        #expect(FileManager.default.isExecutableFile(atPath: CLIRun.executable.path), "build the raffle executable first")
        let dir = TempDir()
        let s = try await Self.server(dir)
        let at = ["--server", "127.0.0.1:\(s.port)", "--admin-key", testAdminKey]

        let created = try await CLIRun.raffle(["create"] + at + ["--title", "CLI drop", "--duration", "10m", "--winners", "3", "--json"])
        #expect(created.status == 0, "\(created.stderr)")
        let info = try JSONDecoder().decode(RaffleInfo.self, from: Data(created.stdout.utf8))
        #expect(info.spec.title == "CLI drop" && info.spec.winners == 3)
        let id = String(info.id)

        // A CSV with a header, 2,500 users, one repeated: more than one batch on the stream.
        var csv = "user_id,tickets\n"
        for user in 1...2_500 { csv += "\(user),1\n" }
        csv += "7,1\n"
        let file = dir.path + "/entries.csv"
        try csv.write(toFile: file, atomically: true, encoding: .utf8)
        let submitted = try await CLIRun.raffle(["submit"] + at + [id, file, "--batch", "400", "--window", "3"])
        #expect(submitted.status == 0, "\(submitted.stderr)")
        #expect(submitted.stdout.contains("submitted 2,501 entries"), "\(submitted.stdout)")
        #expect(submitted.stdout.contains("accepted: 2,500") && submitted.stdout.contains("already_entered: 1"), "\(submitted.stdout)")

        // NDJSON on stdin.
        let piped = try await CLIRun.raffle(["submit"] + at + [id, "-"], stdin: "{\"userId\": 9001, \"tickets\": 1}\n{\"user_id\": 9002}\n")
        #expect(piped.status == 0, "\(piped.stderr)")
        #expect(piped.stdout.contains("accepted: 2"), "\(piped.stdout)")

        let listed = try await CLIRun.raffle(["list"] + at)
        #expect(listed.stdout.contains("2502 entries") && listed.stdout.contains("CLI drop"), "\(listed.stdout)")

        let closed = try await CLIRun.raffle(["close"] + at + [id, "--json"])
        #expect(closed.status == 0, "\(closed.stderr)")
        let drawn = try JSONDecoder().decode(RaffleInfo.self, from: Data(closed.stdout.utf8))
        let draw = try #require(drawn.draw)
        #expect(draw.winners.count == 3 && draw.entries == 2_502)
        let winners = try await CLIRun.raffle(["winners"] + at + [id])
        #expect(winners.stdout.contains(draw.winners.map(String.init).joined(separator: ", ")), "\(winners.stdout)")
        let again = try await CLIRun.raffle(["draw"] + at + [id, "--json"])
        #expect(try JSONDecoder().decode(RaffleInfo.self, from: Data(again.stdout.utf8)).draw == draw, "drawing twice gives the same draw")

        // Verify against the server, then offline from an export file alone.
        let online = try await CLIRun.raffle(["verify"] + at + [id])
        #expect(online.status == 0 && online.stdout.contains("verified"), "\(online.stdout)\(online.stderr)")
        let exportFile = dir.path + "/export.csv"
        let exported = try await CLIRun.raffle(["export"] + at + [id, "--output", exportFile])
        #expect(exported.status == 0, "\(exported.stderr)")
        let offline = try await CLIRun.raffle([
            "verify", "--export", exportFile, "--seed", draw.seed, "--winners", "3", "--commitment", info.seedCommitment,
            "--hash", draw.entryListHash, "--expect", draw.winners.map(String.init).joined(separator: ","),
        ])
        #expect(offline.status == 0 && offline.stdout.contains("verified"), "\(offline.stdout)\(offline.stderr)")
        // A tampered export fails verification.
        let lines = try String(contentsOfFile: exportFile, encoding: .utf8).split(separator: "\n")
        try (lines.dropLast().joined(separator: "\n") + "\n").write(toFile: exportFile, atomically: true, encoding: .utf8)
        let tampered = try await CLIRun.raffle([
            "verify", "--export", exportFile, "--seed", draw.seed, "--winners", "3", "--hash", draw.entryListHash,
        ])
        #expect(tampered.status == 1 && tampered.stdout.contains("DOES NOT MATCH"), "\(tampered.stdout)")
        await s.shutdown()
    }

    @Test func badInputAndFailuresExitNonZeroWithAClearMessage() async throws {
        let dir = TempDir()
        let s = try await Self.server(dir)
        let at = ["--server", "127.0.0.1:\(s.port)", "--admin-key", testAdminKey]
        let created = try await CLIRun.raffle(["create"] + at + ["--title", "Bad", "--duration", "1h", "--json"])
        let id = String(try JSONDecoder().decode(RaffleInfo.self, from: Data(created.stdout.utf8)).id)

        // A bad line: the entries before it are submitted, the line is named, exit 1.
        let file = dir.path + "/bad.csv"
        try "1,1\n2,1\nnot-a-user\n3,1\n".write(toFile: file, atomically: true, encoding: .utf8)
        let bad = try await CLIRun.raffle(["submit"] + at + [id, file])
        #expect(bad.status == 1)
        #expect(bad.stderr.contains("line 3") && bad.stderr.contains("not-a-user"), "\(bad.stderr)")
        #expect(bad.stdout.contains("accepted: 2"), "\(bad.stdout)")

        let unknown = try await CLIRun.raffle(["submit"] + at + ["424242", "-"], stdin: "5\n")
        #expect(unknown.status == 1 && unknown.stderr.contains("UNKNOWN_RAFFLE"), "\(unknown.stderr)")
        let missing = try await CLIRun.raffle(["show"] + at + ["424242"])
        #expect(missing.status != 0 && missing.stderr.contains("404"), "\(missing.stderr)")
        let badServer = try await CLIRun.raffle(["list", "--server", "nope"])
        #expect(badServer.status != 0 && badServer.stderr.contains("HOST:PORT"), "\(badServer.stderr)")
        let badDuration = try await CLIRun.raffle(["create"] + at + ["--title", "x", "--duration", "soon"])
        #expect(badDuration.status != 0 && badDuration.stderr.contains("--duration"), "\(badDuration.stderr)")
        let noFile = try await CLIRun.raffle(["submit"] + at + [id, dir.path + "/absent.csv"])
        #expect(noFile.status != 0 && noFile.stderr.contains("cannot open"), "\(noFile.stderr)")
        await s.shutdown()
    }

    @Test func rejectsFileAndTheThrottlingSummary() async throws {
        let dir = TempDir()
        // A small anonymous limit, so the stream is throttled; a raffle that allows 2 tickets.
        let (s, _) = try await TestServer.start(in: dir) { $0.admission.anonymous = RateLimit(ratePerSecond: 20, burst: 6) }
        let at = ["--server", "127.0.0.1:\(s.port)", "--admin-key", testAdminKey]
        let created = try await CLIRun.raffle(["create"] + at + ["--title", "Rejects", "--duration", "1h", "--max-tickets", "2", "--json"])
        let id = String(try JSONDecoder().decode(RaffleInfo.self, from: Data(created.stdout.utf8)).id)
        let file = dir.path + "/mixed.csv"
        try "1,1\n2,9\nnot-a-user\n3,1\n4,1\n5,2\n6,1\n".write(toFile: file, atomically: true, encoding: .utf8)
        let rejects = dir.path + "/rejects.ndjson"
        let run = try await CLIRun.raffle(["submit"] + at + [id, file, "--batch", "2", "--window", "1", "--rejects", rejects, "--quiet"])
        #expect(run.status == 0, "with --rejects a bad line is skipped, not fatal: \(run.stderr)")
        #expect(run.stdout.contains("accepted: 5") && run.stdout.contains("invalid_tickets: 1"), "\(run.stdout)")
        #expect(run.stdout.contains("throttled") && run.stdout.contains("rate_limited"), "\(run.stdout)")
        #expect(run.stdout.contains("anonymous limit") && run.stdout.contains("--api-key"), "the hint names the way out: \(run.stdout)")
        #expect(run.stdout.contains("2 rejects"), "\(run.stdout)")
        let lines = try String(contentsOfFile: rejects, encoding: .utf8).split(separator: "\n")
        let objects = try lines.map { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:] }
        #expect(objects.contains { ($0["input"] as? String)?.contains("line 3") == true && $0["reason"] as? String == "unreadable" }, "\(lines)")
        #expect(objects.contains { ($0["userId"] as? Int) == 2 && ($0["tickets"] as? Int) == 9 && $0["reason"] as? String == "invalid_tickets" }, "\(lines)")
        await s.shutdown()
    }
}
