import Foundation
import Histogram
import Synchronization

/// What a run measured, shared by every connection and task of the load generator: latencies in an
/// HdrHistogram (microseconds, 1 µs to 100 s, 3 significant digits), and a per-second series of
/// acknowledged entries, requests, throttled replies and p50/p99 latency for the picture.
final class Recorder: Sendable {
    struct Second: Codable, Sendable {
        var t: Int
        var entries: Int
        var requests: Int
        var throttled: Int
        var p50Micros: UInt64
        var p99Micros: UInt64
    }

    private struct State {
        var overall = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 100_000_000, numberOfSignificantValueDigits: .three)
        var interval = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 100_000_000, numberOfSignificantValueDigits: .three)
        var intervalEntries = 0
        var intervalRequests = 0
        var intervalThrottled = 0
        var series: [Second] = []
        var entries = 0
        var requests = 0
        var throttled = 0
        var errors = 0
        var notAccepted = 0
    }

    private let state = Mutex(State())
    let start = ContinuousClock.now

    /// An acknowledged request: `entries` in it, `micros` from its (scheduled) start to its ack.
    func ack(entries: Int, micros: UInt64, notAccepted: Int = 0) {
        state.withLock { s in
            _ = s.overall.record(max(micros, 1))
            _ = s.interval.record(max(micros, 1))
            s.entries += entries
            s.requests += 1
            s.intervalEntries += entries
            s.intervalRequests += 1
            s.notAccepted += notAccepted
        }
    }

    /// Adds what one connection recorded locally, and clears it.
    func merge(_ local: inout LocalRecord) {
        guard local.count > 0 || local.throttled > 0 || local.errors > 0 else { return }
        state.withLock { s in
            s.overall.add(local.histogram)
            s.interval.add(local.histogram)
            s.entries += local.entries
            s.requests += local.count
            s.intervalEntries += local.entries
            s.intervalRequests += local.count
            s.notAccepted += local.notAccepted
            s.throttled += local.throttled
            s.intervalThrottled += local.throttled
            s.errors += local.errors
        }
        local.reset()
    }

    /// A request that failed for good.
    func error() { state.withLock { $0.errors += 1 } }

    /// Closes the current second of the series (called once a second by the progress line).
    func tick() -> Second {
        state.withLock { s in
            let t = Int((ContinuousClock.now - start).components.seconds)
            let second = Second(
                t: t, entries: s.intervalEntries, requests: s.intervalRequests, throttled: s.intervalThrottled,
                p50Micros: s.interval.totalCount > 0 ? s.interval.valueAtPercentile(50) : 0,
                p99Micros: s.interval.totalCount > 0 ? s.interval.valueAtPercentile(99) : 0)
            s.series.append(second)
            s.interval.reset()
            s.intervalEntries = 0
            s.intervalRequests = 0
            s.intervalThrottled = 0
            return second
        }
    }

    var entries: Int { state.withLock { $0.entries } }
    var requests: Int { state.withLock { $0.requests } }
    var throttled: Int { state.withLock { $0.throttled } }
    var errors: Int { state.withLock { $0.errors } }
    var notAccepted: Int { state.withLock { $0.notAccepted } }
    var series: [Second] { state.withLock { $0.series } }

    /// Latency percentiles in microseconds.
    func percentiles(_ ps: [Double]) -> [Double: UInt64] {
        state.withLock { s in
            var out: [Double: UInt64] = [:]
            for p in ps { out[p] = s.overall.totalCount > 0 ? s.overall.valueAtPercentile(p) : 0 }
            return out
        }
    }

    var maxMicros: UInt64 { state.withLock { $0.overall.max } }
}

extension Duration {
    var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }
    var micros: UInt64 { UInt64(max(0, components.seconds * 1_000_000 + components.attoseconds / 1_000_000_000_000)) }
}

/// Prints the live progress line once a second (and closes each second of the series).
func progressLoop(_ recorder: Recorder, label: String, total: Int?, until done: @escaping @Sendable () -> Bool) -> Task<Void, Never> {
    Task {
        while !done() && !Task.isCancelled {
            try? await Task.sleep(for: .seconds(1))
            let second = recorder.tick()
            let entries = recorder.entries
            let elapsed = (ContinuousClock.now - recorder.start).seconds
            var line = String(format: "%@ %5.0fs  %9d entries/s  acknowledged %d", label, elapsed, second.entries, entries)
            if let total { line += String(format: "/%d (%.0f%%)", total, 100 * Double(entries) / Double(max(total, 1))) }
            line += "  throttled \(recorder.throttled)  p99 \(second.p99Micros / 1000) ms"
            FileHandle.standardError.write(Data((line + "\n").utf8))
        }
    }
}

/// What one event-loop connection records between merges into the shared `Recorder`.
struct LocalRecord {
    var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 100_000_000, numberOfSignificantValueDigits: .three)
    var count = 0
    var entries = 0
    var notAccepted = 0
    var throttled = 0
    var errors = 0

    mutating func ack(entries: Int, micros: UInt64, notAccepted: Int = 0) {
        _ = histogram.record(max(micros, 1))
        count += 1
        self.entries += entries
        self.notAccepted += notAccepted
    }

    mutating func reset() {
        histogram.reset()
        count = 0
        entries = 0
        notAccepted = 0
        throttled = 0
        errors = 0
    }
}
