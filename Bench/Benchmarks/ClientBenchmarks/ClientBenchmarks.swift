// What one RaffleClient.submit call costs on the client side (issue #15): allocations and time per
// single-entry call over HTTP/2 to a real raffled (release build, started here as its own process so
// that only the client's allocations are counted), one call at a time and 100 at once.
//
//   swift build -c release --product raffled && cd Bench && swift package benchmark --target ClientBenchmarks
import Benchmark
import Foundation
import RaffleClient
import RaffleClientHTTP2
import RaffleWire

/// A raffled started for the benchmarks: durability none (the client's cost is measured, not the disk).
final class Server: Sendable {
    let port: Int
    let adminKey: String
    let process: Process
    let data: String

    init() throws {
        let binary = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../../.build/release/raffled").standardized.path
        guard FileManager.default.isExecutableFile(atPath: binary) else {
            throw CocoaError(.fileNoSuchFile, userInfo: [NSFilePathErrorKey: binary + " (build it: swift build -c release --product raffled)"])
        }
        data = NSTemporaryDirectory() + "client-bench-\(getpid())"
        process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["--port", "0", "--data", data, "--durability", "none", "--log-level", "warning", "--global-rate", "0", "--anonymous-rate", "1000000000"]
        let out = Pipe()
        process.standardOutput = out
        try process.run()
        var text = ""
        while !text.contains("\n") {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        guard let r = text.range(of: "127.0.0.1:"), let port = Int(text[r.upperBound...].prefix { $0.isNumber }) else {
            process.terminate()
            throw CocoaError(.fileReadCorruptFile, userInfo: [NSLocalizedDescriptionKey: "raffled did not start: \(text)"])
        }
        self.port = port
        adminKey = try String(contentsOfFile: data + "/admin.key", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func stop() {
        process.terminate()
        process.waitUntilExit()
        try? FileManager.default.removeItem(atPath: data)
    }
}

/// The server and client every benchmark here shares (started by the global setup, stopped by the
/// teardown), and the next fresh user id.
final class Shared: @unchecked Sendable {
    // @unchecked Sendable: set once by `Benchmark.setup` before any benchmark runs and read after;
    // `next` is only advanced by the running benchmark's body (one at a time: the concurrent variant
    // takes its ids before starting its tasks).
    var server: Server?
    var client: RaffleClient?
    var raffle: UInt64 = 0
    var next: UInt64 = 1

    func take(_ n: UInt64) -> UInt64 {
        defer { next += n }
        return next
    }
}

let shared = Shared()

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .mallocCountTotal, .throughput],
        maxDuration: .seconds(5),
        maxIterations: 100_000
    )
    Benchmark.setup = {
        let server = try Server()
        let client = RaffleClient(transport: HTTP2Transport(host: "127.0.0.1", port: server.port), configuration: .init(adminKey: server.adminKey))
        shared.server = server
        shared.client = client
        shared.raffle = try await client.createRaffle(title: "bench", duration: .seconds(3_600)).id
        for _ in 0..<2_000 { _ = try await client.submit([Entry(userID: shared.take(1))], to: shared.raffle) }  // warm
    }
    Benchmark.teardown = {
        await shared.client?.transport.close()
        shared.server?.stop()
    }

    Benchmark("RaffleClient.submit: one single-entry call at a time, HTTP/2") { benchmark in
        guard let client = shared.client else { return }
        let raffle = shared.raffle
        for _ in benchmark.scaledIterations {
            blackHole(try await client.submit([Entry(userID: shared.take(1))], to: raffle))
        }
    }

    Benchmark("RaffleClient.submit: 100 single-entry calls at once, HTTP/2 (per 100)") { benchmark in
        guard let client = shared.client else { return }
        let raffle = shared.raffle
        for _ in benchmark.scaledIterations {
            let first = shared.take(100)
            try await withThrowingTaskGroup(of: Void.self) { group in
                for u in first..<(first + 100) { group.addTask { blackHole(try await client.submit([Entry(userID: u)], to: raffle)) } }
                try await group.waitForAll()
            }
        }
    }
}
