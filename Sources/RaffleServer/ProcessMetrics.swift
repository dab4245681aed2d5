#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif
import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// The standard Prometheus process metrics — `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_open_fds`,
/// `process_max_fds`, `process_start_time_seconds` — read at each scrape (swift-metrics and
/// swift-prometheus ship no process collector). Linux: from /proc/self; elsewhere CPU time and the
/// start time only.
final class ProcessMetrics: Sendable {
    private let cpu: FloatingPointCounter
    private let resident: CoreMetrics.Gauge
    private let virtual: CoreMetrics.Gauge
    private let openFDs: CoreMetrics.Gauge
    private let maxFDs: CoreMetrics.Gauge
    private let startTime: CoreMetrics.Gauge
    private let reportedCPU = Mutex<Double>(0)

    init(factory: PrometheusMetricsFactory) {
        cpu = FloatingPointCounter(label: "process_cpu_seconds_total", factory: factory)
        resident = Gauge(label: "process_resident_memory_bytes", factory: factory)
        virtual = Gauge(label: "process_virtual_memory_bytes", factory: factory)
        openFDs = Gauge(label: "process_open_fds", factory: factory)
        maxFDs = Gauge(label: "process_max_fds", factory: factory)
        startTime = Gauge(label: "process_start_time_seconds", factory: factory)
        startTime.record(Self.startedAt)
    }

    /// Wall-clock time this process started, seconds since the epoch (from /proc on Linux).
    static let startedAt: Double = {
        #if os(Linux)
            if let stat = try? String(contentsOfFile: "/proc/self/stat", encoding: .utf8),
                let boot = bootTime(),
                let fields = fieldsAfterName(stat), fields.count > 19, let ticks = Double(fields[19])
            {
                return boot + ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
            }
        #endif
        return Date().timeIntervalSince1970
    }()

    /// Refreshes the values (call before rendering).
    func update() {
        var usage = rusage()
        #if os(Linux)
            let who = RUSAGE_SELF.rawValue
        #else
            let who = RUSAGE_SELF
        #endif
        if getrusage(who, &usage) == 0 {
            let seconds =
                Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
                + Double(usage.ru_stime.tv_usec) / 1e6
            let delta = reportedCPU.withLock { last -> Double in
                defer { last = max(last, seconds) }
                return seconds - last
            }
            if delta > 0 { cpu.increment(by: delta) }
        }
        #if os(Linux)
            if let statm = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) {
                let pages = statm.split(separator: " ").compactMap { Int($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
                let page = Int(sysconf(Int32(_SC_PAGESIZE)))
                if pages.count >= 2 {
                    virtual.record(pages[0] * page)
                    resident.record(pages[1] * page)
                }
            }
            if let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd") { openFDs.record(fds.count) }
        #endif
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { maxFDs.record(Int(clamping: limit.rlim_cur)) }
    }

    /// /proc/PID/stat's fields after the command name (which may hold spaces): field 3 on.
    private static func fieldsAfterName(_ stat: String) -> [Substring]? {
        guard let close = stat.lastIndex(of: ")") else { return nil }
        return stat[stat.index(after: close)...].split(separator: " ")
    }

    private static func bootTime() -> Double? {
        guard let text = try? String(contentsOfFile: "/proc/stat", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmingCharacters(in: .whitespaces))
        }
        return nil
    }
}
