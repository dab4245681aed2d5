import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// How the ledger's background threads (the log writer, the checkpoint writer) run: named, so that
/// `top -H` and profiles show them, and under `SCHED_BATCH`.
///
/// `SCHED_BATCH` is the normal time-sharing policy without wake-up preemption: when the writer wakes
/// (data to commit, its pacing timer, each I/O completion inside `fdatasync`) it does not interrupt
/// the event loop on the spot but runs at the loop's next pause or scheduler tick, and it still gets
/// its fair share of the CPU, so commits never starve. Measured with the loop and the writer sharing
/// one core (Bench/RESULTS.md, issue #15, "The log writer off the event loop's back"): the loop was
/// preempted ~3,900 times a second by the writer's ~4,800 wake-ups; under `SCHED_BATCH` the server
/// spent 6–14 % less CPU per durable single-entry request (17–28 % in a first experiment with
/// `chrt`), at a lower p50, and bulk ingest 12–34 % less per entry. On a machine with cores
/// to spare the writer runs on another one and the policy changes nothing. Needs no privilege.
package enum BackgroundThread {
    /// Names the calling thread (the kernel keeps 15 bytes) and moves it to `SCHED_BATCH`; returns
    /// whether the policy was set.
    @discardableResult
    package static func configureCurrent(name: String) -> Bool {
        Thread.current.name = name  // set from the thread itself, so the kernel's name changes too
        #if os(Linux)
        var parameters = sched_param()
        parameters.sched_priority = 0
        return pthread_setschedparam(pthread_self(), 3 /* SCHED_BATCH */, &parameters) == 0
        #else
        return false
        #endif
    }
}
