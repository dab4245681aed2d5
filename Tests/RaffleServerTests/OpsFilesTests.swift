import Foundation
import RaffleAdmission
import RaffleHTTP2Client
import RaffleTestSupport
import RaffleWire
import Testing

/// The files in ops/ checked the way their tools check them, against what the server really
/// exports (issue #16): Prometheus alert rules (`promtool check rules`, `promtool test rules`), the
/// Grafana dashboard (its queries parse and name only metrics raffled exports), the systemd unit
/// (`systemd-analyze verify`) and its RAFFLED_* settings (a raffled started with them).
@Suite("ops/: alert rules, dashboard, systemd unit", .timeLimit(.minutes(1)))
struct OpsFilesTests {
    static let ops = repositoryRoot + "/ops"

    static func tool(_ name: String) throws -> String {
        for dir in ["/usr/bin", "/usr/local/bin", "/bin"] where FileManager.default.isExecutableFile(atPath: dir + "/" + name) {
            return dir + "/" + name
        }
        throw HTTP2ClientError("\(name) is not installed: scripts/setup --tests installs it")
    }

    /// Metric names in PromQL expressions (histogram series folded to their family).
    static func metricNames(in expressions: [String]) -> Set<String> {
        let pattern = try! NSRegularExpression(pattern: #"\b(?:raffled|process)_[a-z0-9_]+"#)
        var names = Set<String>()
        for e in expressions {
            for m in pattern.matches(in: e, range: NSRange(e.startIndex..., in: e)) {
                var name = String(e[Range(m.range, in: e)!])
                for suffix in ["_bucket", "_sum", "_count"] where name.hasSuffix(suffix) && name.contains("_seconds") {
                    name = String(name.dropLast(suffix.count))
                }
                names.insert(name)
            }
        }
        return names
    }

    /// Every metric family the server exports (its `# TYPE` lines), after traffic on it.
    static func exported() async throws -> Set<String> {
        // An API-key client configured, so its per-client metrics exist too.
        let f = try await ServerFixture.start { $0.admission.clients = [.init(name: "partner", key: "partner-key-0123456789abcdef", rate: 100, burst: 200)] }
        let raffle = try await f.createRaffle()
        _ = try await f.post(batchFrame(raffle: raffle, users: 1...3, requestID: 1))
        let text = String(buffer: try await f.client.request(method: "GET", path: "/metrics").body)
        await f.stop()
        return Set(text.split(separator: "\n").filter { $0.hasPrefix("# TYPE ") }.map { String($0.split(separator: " ")[2]) })
    }

    @Test func alertRulesPassPromtoolAndNameExportedMetrics() async throws {
        let promtool = try Self.tool("promtool")
        let check = try await runCommand(promtool, ["check", "rules", Self.ops + "/prometheus/raffled-alerts.yml"])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
        let test = try await runCommand(promtool, ["test", "rules", Self.ops + "/prometheus/raffled-alerts.test.yml"])
        #expect(test.status == 0, "\(test.stdout)\(test.stderr)")
        let rules = try String(contentsOfFile: Self.ops + "/prometheus/raffled-alerts.yml", encoding: .utf8)
        let used = Self.metricNames(in: [rules])
        let exported = try await Self.exported()
        #expect(!used.isEmpty)
        #expect(used.subtracting(exported).isEmpty, "alert rules name metrics raffled does not export: \(used.subtracting(exported))")
    }

    @Test func dashboardQueriesParseAndNameOnlyExportedMetrics() async throws {
        let data = try Data(contentsOf: URL(fileURLWithPath: Self.ops + "/grafana/raffled-dashboard.json"))
        let dashboard = try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
        let panels = try #require(dashboard["panels"] as? [[String: Any]])
        let expressions = panels.flatMap { ($0["targets"] as? [[String: Any]] ?? []).compactMap { $0["expr"] as? String } }
        #expect(expressions.count >= panels.count, "every panel has a query")
        let used = Self.metricNames(in: expressions)
        let exported = try await Self.exported()
        #expect(used.subtracting(exported).isEmpty, "the dashboard names metrics raffled does not export: \(used.subtracting(exported))")
        for family in ["raffled_entries_total", "raffled_entries_acknowledged_total", "raffled_ack_latency_seconds", "raffled_throttled_total",
            "raffled_log_bytes", "raffled_checkpoint_bytes", "process_resident_memory_bytes", "process_cpu_seconds_total"]
        {
            #expect(used.contains(family), "the dashboard shows \(family)")
        }
        // Each query parses: promtool checks them as recording rules ($instance as a regex).
        let dir = TempDir()
        var rules = "groups:\n  - name: dashboard\n    rules:\n"
        for (i, e) in expressions.enumerated() {
            let expr = e.replacingOccurrences(of: "$instance", with: ".*").replacingOccurrences(of: "'", with: "''")
            rules += "      - record: dashboard:query_\(i)\n        expr: '\(expr)'\n"
        }
        let path = dir.path + "/dashboard-rules.yml"
        try rules.write(toFile: path, atomically: true, encoding: .utf8)
        let check = try await runCommand(try Self.tool("promtool"), ["check", "rules", path])
        #expect(check.status == 0, "\(check.stdout)\(check.stderr)")
    }

    @Test func systemdUnitVerifiesAndItsSettingsStartRaffled() async throws {
        let unit = try String(contentsOfFile: Self.ops + "/systemd/raffled.service", encoding: .utf8)
        let dir = TempDir()
        // verify checks ExecStart's binary exists: point it at the one built here.
        let local = unit.replacingOccurrences(of: "/usr/local/bin/raffled", with: RaffledProcess.executable.path)
        try local.write(toFile: dir.path + "/raffled.service", atomically: true, encoding: .utf8)
        let verify = try await runCommand(try Self.tool("systemd-analyze"), ["verify", dir.path + "/raffled.service"])
        #expect(verify.status == 0 && verify.stderr.isEmpty, "systemd-analyze verify: \(verify.stderr)")
        for option in ["NoNewPrivileges=yes", "ProtectSystem=strict", "DynamicUser=yes", "CapabilityBoundingSet=", "SystemCallFilter=@system-service"] {
            #expect(unit.contains(option), "hardened: \(option)")
        }
        // The unit's Environment= and the sample env file are options raffled knows: it starts with
        // them (the command line keeps it on 127.0.0.1, a free port and a temporary directory).
        var environment: [String: String] = [:]
        let envFile = try String(contentsOfFile: Self.ops + "/systemd/raffled.env", encoding: .utf8)
        let assignments =
            unit.split(separator: "\n").filter { $0.hasPrefix("Environment=") }.flatMap { $0.dropFirst("Environment=".count).split(separator: " ") }
            + envFile.split(separator: "\n").filter { $0.hasPrefix("RAFFLED_") }
        for a in assignments {
            let parts = a.split(separator: "=", maxSplits: 1)
            if parts.count == 2 { environment[String(parts[0])] = String(parts[1]) }
        }
        #expect(environment.count >= 4)
        let p = try await RaffledProcess.launch(data: dir.path + "/data", extra: ["--host", "127.0.0.1"], environment: environment)
        #expect(p.port > 0)
        _ = p.terminate()
    }
}
