import Foundation

/// The raffled under test: one given by address, or one this run starts (and stops) itself.
final class Target: @unchecked Sendable {
    // @unchecked Sendable: every stored property is a `let` set in init; `process` is only
    // signalled (kill/terminate, thread-safe) and waited on after that.
    let host: String
    let port: Int
    let tcpPort: Int?
    let udpPort: Int?
    /// The admin key (creating the bench's raffle, reading stats): read from the data directory of a
    /// server this run started, else `--admin-key` / `$RAFFLE_ADMIN_KEY`.
    let adminKey: String?
    private let process: Process?
    private let dataDirectory: String?
    let description: String

    /// Uses a running server at `host:port` (raw TCP and UDP on the default offsets).
    init(address: String, adminKey: String?) throws {
        self.adminKey = adminKey
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw BenchError("--target: expected HOST:PORT, got \(address)")
        }
        host = String(address[..<colon])
        self.port = port
        tcpPort = port + 1
        udpPort = port + 2
        process = nil
        dataDirectory = nil
        description = "raffled at \(address) (given)"
    }

    /// Starts `executable` on free ports with a fresh data directory and `arguments`.
    init(start executable: String, durability: String, arguments: [String]) throws {
        guard FileManager.default.isExecutableFile(atPath: executable) else {
            throw BenchError("cannot run \(executable): build it first (swift build -c release --product raffled) or pass --raffled PATH")
        }
        let data = FileManager.default.temporaryDirectory.appendingPathComponent("raffle-bench-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        let p = Process()
        p.executableURL = URL(fileURLWithPath: executable)
        p.arguments = ["--port", "0", "--data", data, "--durability", durability, "--log-level", "warning"] + arguments
        let out = Pipe()
        p.standardOutput = out
        p.standardError = FileHandle.standardError
        try p.run()
        var text = ""
        let deadline = Date().addingTimeInterval(30)
        while text.split(separator: "\n").count < 2 && Date() < deadline {
            let chunk = out.fileHandleForReading.availableData
            if chunk.isEmpty { break }
            text += String(decoding: chunk, as: UTF8.self)
        }
        func number(after marker: String) -> Int? {
            guard let r = text.range(of: marker) else { return nil }
            return Int(text[r.upperBound...].prefix { $0.isNumber })
        }
        guard let port = number(after: "127.0.0.1:") else {
            p.terminate()
            throw BenchError("raffled did not start: \(text)")
        }
        host = "127.0.0.1"
        self.port = port
        tcpPort = number(after: "raw TCP port ")
        udpPort = number(after: "UDP port ")
        // raffled makes DATA/admin.key at first start when given no --admin-keys.
        adminKey = (try? String(contentsOfFile: data + "/admin.key", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        process = p
        dataDirectory = data
        description = "raffled started by the bench (\(executable), durability \(durability), \(arguments.joined(separator: " ")))"
    }

    /// The server's resident memory (kB), if this run started it.
    var rssKilobytes: Int? {
        guard let process, let status = try? String(contentsOfFile: "/proc/\(process.processIdentifier)/status", encoding: .utf8) else { return nil }
        guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return nil }
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "")
    }

    /// Stops a server this run started and removes its data.
    func stop() {
        guard let process else { return }
        process.terminate()
        process.waitUntilExit()
        if let dataDirectory { try? FileManager.default.removeItem(atPath: dataDirectory) }
    }

    /// Finds the raffled executable: `--raffled`, else the root package's release then debug build.
    static func locate(_ explicit: String?) -> String {
        if let explicit { return explicit }
        let here = FileManager.default.currentDirectoryPath
        for candidate in ["../.build/release/raffled", ".build/release/raffled", "../.build/debug/raffled", ".build/debug/raffled"] {
            let path = URL(fileURLWithPath: here).appendingPathComponent(candidate).standardized.path
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return "../.build/release/raffled"
    }
}

/// A bench run that cannot go on.
struct BenchError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
