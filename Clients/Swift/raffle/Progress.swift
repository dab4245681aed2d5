import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// The progress line for long work: on a terminal, one line redrawn in place (bar, percentage,
/// entries, rate, ETA); otherwise a plain line every few seconds, so logs stay readable.
struct ProgressLine {
    private let start = ContinuousClock.now
    private var lastDraw = ContinuousClock.now
    private let terminal = isatty(2) == 1
    private let enabled: Bool
    private var drewInPlace = false

    init(enabled: Bool) { self.enabled = enabled }

    /// Elapsed time in seconds.
    var elapsed: Double { (ContinuousClock.now - start).seconds }

    /// Draws if enough time has passed since the last draw.
    mutating func update(done: Int, answered: Int, bytes: Int64, totalBytes: Int64?) {
        guard enabled else { return }
        let now = ContinuousClock.now
        guard now - lastDraw >= (terminal ? .milliseconds(200) : .seconds(5)) else { return }
        lastDraw = now
        let t = max(elapsed, 0.001)
        var text = ""
        if let totalBytes, totalBytes > 0 {
            // Share of the input read, scaled by the share of what was read that is acknowledged.
            let share = min(Double(bytes) / Double(totalBytes), 1) * (done > 0 ? Double(answered) / Double(done) : 0)
            let filled = Int(share * 24)
            let eta = share > 0 ? t / share - t : 0
            text = "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 24 - filled) + "] "
            text += String(format: "%3.0f%%  ", share * 100)
            text += "\(Self.grouped(answered)) acknowledged  \(Self.grouped(Int(Double(answered) / t)))/s  ETA \(Self.clock(eta))"
        } else {
            text = "\(Self.grouped(done)) read  \(Self.grouped(answered)) acknowledged  \(Self.grouped(Int(Double(answered) / t)))/s  \(Self.clock(t)) elapsed"
        }
        if terminal {
            FileHandle.standardError.write(Data(("\r\u{1B}[K" + text).utf8))
            drewInPlace = true
        } else {
            FileHandle.standardError.write(Data((text + "\n").utf8))
        }
    }

    /// Ends the in-place line.
    mutating func finish() {
        if drewInPlace { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) }
        drewInPlace = false
    }

    static func grouped(_ n: Int) -> String {
        let digits = String(n)
        var out = ""
        for (i, c) in digits.enumerated() {
            if i > 0 && (digits.count - i) % 3 == 0 { out.append(",") }
            out.append(c)
        }
        return out
    }

    static func clock(_ seconds: Double) -> String {
        let s = Int(seconds.rounded())
        return s >= 3600 ? String(format: "%d:%02d:%02d", s / 3600, s / 60 % 60, s % 60) : String(format: "%d:%02d", s / 60, s % 60)
    }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
}
