import Foundation

/// One run's result: what the final table shows, the JSON file holds, and the picture draws.
struct RunResult: Codable, Sendable {
    var scenario: String
    var transport: String
    var date: String
    var target: String
    var parameters: [String: String]
    var seconds: Double
    var requests: Int
    var entriesAcknowledged: Int
    /// Entries the server holds for the run's raffle, read back after the run (nil: not checked).
    var entriesStored: Int?
    /// Acknowledged entries missing from the server: must be 0.
    var lost: Int?
    var attemptsPerEntry: Double?
    var throttledShare: Double
    var entriesPerSecond: Double
    var requestsPerSecond: Double
    var latencyMillis: [String: Double]
    var serverRSSKilobytes: Int?
    /// The dedupe index's bytes per stored entry, from the server's /v1/stats after the run.
    var indexBytesPerEntry: Double?
    var notes: [String]
    var series: [Recorder.Second]

    init(scenario: String, transport: String, target: Target, parameters: [String: String], recorder: Recorder, seconds: Double) {
        self.scenario = scenario
        self.transport = transport
        date = ISO8601DateFormatter().string(from: Date())
        self.target = target.description
        self.parameters = parameters
        self.seconds = seconds
        requests = recorder.requests
        entriesAcknowledged = recorder.entries
        let attempts = recorder.requests + recorder.throttled + recorder.errors
        throttledShare = attempts > 0 ? Double(recorder.throttled) / Double(attempts) : 0
        entriesPerSecond = Double(recorder.entries) / max(seconds, 1e-9)
        requestsPerSecond = Double(recorder.requests) / max(seconds, 1e-9)
        let p = recorder.percentiles([50, 90, 99, 99.9])
        latencyMillis = [
            "p50": Double(p[50] ?? 0) / 1000, "p90": Double(p[90] ?? 0) / 1000, "p99": Double(p[99] ?? 0) / 1000,
            "p99.9": Double(p[99.9] ?? 0) / 1000, "max": Double(recorder.maxMicros) / 1000,
        ]
        serverRSSKilobytes = target.rssKilobytes
        notes = []
        series = recorder.series
    }

    /// The final table.
    func printTable() {
        func row(_ name: String, _ value: String) { print(name.padding(toLength: 30, withPad: " ", startingAt: 0) + value) }
        print("")
        print("raffle-bench \(scenario) over \(transport) — \(target)")
        for (k, v) in parameters.sorted(by: { $0.key < $1.key }) { row("  " + k, v) }
        row("elapsed", String(format: "%.2f s", seconds))
        row("entries acknowledged", grouped(entriesAcknowledged))
        if let entriesStored { row("entries stored (read back)", grouped(entriesStored)) }
        if let lost { row("lost", lost == 0 ? "0 ✔" : "\(lost) ✘") }
        row("requests acknowledged", grouped(requests))
        if let attemptsPerEntry { row("attempts per entry", String(format: "%.3f", attemptsPerEntry)) }
        row("throttled share of attempts", String(format: "%.1f %%", throttledShare * 100))
        row("rate", "\(grouped(Int(entriesPerSecond))) entries/s, \(grouped(Int(requestsPerSecond))) requests/s")
        row("latency p50 / p90 / p99", String(format: "%.2f / %.2f / %.2f ms", latencyMillis["p50"] ?? 0, latencyMillis["p90"] ?? 0, latencyMillis["p99"] ?? 0))
        row("latency p99.9 / max", String(format: "%.2f / %.2f ms", latencyMillis["p99.9"] ?? 0, latencyMillis["max"] ?? 0))
        if let rss = serverRSSKilobytes { row("server RSS after the run", "\(rss / 1024) MiB") }
        if let index = indexBytesPerEntry { row("index bytes per entry", String(format: "%.1f", index)) }
        for note in notes { print("  note: " + note) }
    }

    func writeJSON(_ path: String) throws {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(self).write(to: URL(fileURLWithPath: path))
    }

    /// Throughput (entries/s, left axis) and p50/p99 latency (ms, right axis) over time, as SVG.
    func svg() -> String {
        let w = 900.0, h = 440.0, left = 80.0, right = 80.0, top = 50.0, bottom = 50.0
        let pw = w - left - right, ph = h - top - bottom
        let points = series.isEmpty ? [Recorder.Second(t: 0, entries: 0, requests: 0, throttled: 0, p50Micros: 0, p99Micros: 0)] : series
        let tMax = Double(max(points.map(\.t).max() ?? 1, 1))
        let rateMax = niceCeiling(Double(points.map(\.entries).max() ?? 1))
        let latMax = niceCeiling(Double(points.map(\.p99Micros).max() ?? 1) / 1000)
        func x(_ t: Int) -> Double { left + pw * Double(t) / tMax }
        func yRate(_ v: Int) -> Double { top + ph * (1 - Double(v) / rateMax) }
        func yLat(_ micros: UInt64) -> Double { top + ph * (1 - Double(micros) / 1000 / latMax) }
        func line(_ ys: [Double], _ color: String, dash: String = "") -> String {
            let pts = zip(points, ys).map { String(format: "%.1f,%.1f", x($0.0.t), $0.1) }.joined(separator: " ")
            return "<polyline fill=\"none\" stroke=\"\(color)\" stroke-width=\"2\" \(dash.isEmpty ? "" : "stroke-dasharray=\"\(dash)\"") points=\"\(pts)\"/>"
        }
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" font-family=\"sans-serif\" font-size=\"12\">\n"
        s += "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        s += "<text x=\"\(left)\" y=\"24\" font-size=\"15\" font-weight=\"bold\">raffle-bench \(scenario) over \(transport): \(grouped(entriesAcknowledged)) entries in \(String(format: "%.1f", seconds)) s, p99 \(String(format: "%.1f", latencyMillis["p99"] ?? 0)) ms</text>\n"
        for k in 0...4 {
            let y = top + ph * Double(k) / 4
            s += "<line x1=\"\(left)\" y1=\"\(y)\" x2=\"\(left + pw)\" y2=\"\(y)\" stroke=\"#ddd\"/>\n"
            s += "<text x=\"\(left - 6)\" y=\"\(y + 4)\" text-anchor=\"end\" fill=\"#1f5fbf\">\(grouped(Int(rateMax * Double(4 - k) / 4)))</text>\n"
            s += "<text x=\"\(left + pw + 6)\" y=\"\(y + 4)\" fill=\"#b02020\">\(String(format: "%.1f", latMax * Double(4 - k) / 4))</text>\n"
        }
        for k in 0...5 {
            let t = Int(tMax * Double(k) / 5)
            s += "<text x=\"\(x(t))\" y=\"\(top + ph + 18)\" text-anchor=\"middle\">\(t) s</text>\n"
        }
        s += "<text x=\"18\" y=\"\(top + ph / 2)\" transform=\"rotate(-90 18 \(top + ph / 2))\" text-anchor=\"middle\" fill=\"#1f5fbf\">entries acknowledged per second</text>\n"
        s += "<text x=\"\(w - 16)\" y=\"\(top + ph / 2)\" transform=\"rotate(90 \(w - 16) \(top + ph / 2))\" text-anchor=\"middle\" fill=\"#b02020\">latency, ms</text>\n"
        s += line(points.map { yRate($0.entries) }, "#1f5fbf") + "\n"
        s += line(points.map { yLat($0.p50Micros) }, "#2e8b57", dash: "6,3") + "\n"
        s += line(points.map { yLat($0.p99Micros) }, "#b02020") + "\n"
        let ly = h - 14
        s += "<line x1=\"\(left)\" y1=\"\(ly - 4)\" x2=\"\(left + 24)\" y2=\"\(ly - 4)\" stroke=\"#1f5fbf\" stroke-width=\"2\"/><text x=\"\(left + 30)\" y=\"\(ly)\">entries/s</text>\n"
        s += "<line x1=\"\(left + 120)\" y1=\"\(ly - 4)\" x2=\"\(left + 144)\" y2=\"\(ly - 4)\" stroke=\"#2e8b57\" stroke-width=\"2\" stroke-dasharray=\"6,3\"/><text x=\"\(left + 150)\" y=\"\(ly)\">p50 latency</text>\n"
        s += "<line x1=\"\(left + 250)\" y1=\"\(ly - 4)\" x2=\"\(left + 274)\" y2=\"\(ly - 4)\" stroke=\"#b02020\" stroke-width=\"2\"/><text x=\"\(left + 280)\" y=\"\(ly)\">p99 latency</text>\n"
        s += "</svg>\n"
        return s
    }
}

/// 1, 2 or 5 times a power of ten, at least `v` (axis tops).
func niceCeiling(_ v: Double) -> Double {
    guard v > 0 else { return 1 }
    let p = pow(10, floor(log10(v)))
    for m in [1.0, 2.0, 5.0, 10.0] where m * p >= v { return m * p }
    return 10 * p
}

func grouped(_ n: Int) -> String {
    let digits = String(abs(n))
    var out = ""
    for (i, c) in digits.enumerated() {
        if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
        out.append(c)
    }
    return (n < 0 ? "-" : "") + out
}
