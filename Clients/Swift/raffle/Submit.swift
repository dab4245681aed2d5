import ArgumentParser
import Foundation
import RaffleClient
import RaffleWire
import Synchronization

struct Submit: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Submit entries from a CSV or NDJSON file, or stdin, on one bulk stream.",
        discussion: """
            CSV: user_id[,tickets] per line (a header line is skipped). NDJSON: {"userId": N, "tickets": N} per \
            line. The format follows the file's extension (.csv, .ndjson/.jsonl), else the first line. \
            Entries go out in batches on one long-lived stream with a bounded window; lost connections are \
            resumed and re-sent entries are never counted twice. A progress line shows the rate and ETA; \
            a summary follows. Exit status 1 if the input has a bad line or a batch failed.
            """
    )
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id.") var id: String
    @Argument(help: "Entries file; - or nothing reads stdin.") var file: String?
    @Option(help: "csv or ndjson (default: from the extension or the first line).") var format: EntryFile.Format?
    @Option(help: "Entries per batch.") var batch = 1_000
    @Option(help: "Batches in flight.") var window = 8
    @Flag(help: "No progress line.") var quiet = false

    func validate() throws {
        guard (1...4_096).contains(batch) else { throw ValidationError("--batch must be 1 to 4096 (the server's default limit)") }
        guard (1...256).contains(window) else { throw ValidationError("--window must be 1 to 256") }
    }

    func run() async throws {
        let raffle = try raffleID(id)
        var input = try EntryFile(path: file, format: format)
        let client = try options.client(window: window)
        let stream = client.bulkStream(raffle: raffle)
        let tally = SubmitTally()
        var progress = ProgressLine(enabled: !quiet)
        var read = 0
        var inputError: (any Error)?
        await withTaskGroup(of: Void.self) { group in
            while tally.failure.withLock({ $0 == nil }) {
                let entries: [Entry]
                do { entries = try input.next(batch) } catch {
                    inputError = error
                    break
                }
                if entries.isEmpty { break }
                read += entries.count
                do { try await stream.waitForWindow() } catch { break }
                if tally.failure.withLock({ $0 != nil }) { break }  // a batch failed while we waited
                group.addTask {
                    do {
                        let outcomes = try await stream.send(entries)
                        tally.record(outcomes)
                    } catch {
                        tally.failure.withLock { $0 = $0 ?? "\(error)" }
                    }
                }
                progress.update(done: read, answered: tally.answered, bytes: input.bytesConsumed, totalBytes: input.totalBytes)
            }
            await group.waitForAll()
        }
        await stream.close()
        await client.transport.close()
        progress.finish()

        let seconds = progress.elapsed
        let answered = tally.answered
        var summary = "submitted \(ProgressLine.grouped(answered)) entries to raffle \(raffle) in \(String(format: "%.2f", seconds)) s"
        summary += " (\(ProgressLine.grouped(Int(Double(answered) / max(seconds, 0.001))))/s)"
        let counts = tally.counts.withLock { $0 }
        let parts = counts.sorted { $0.value > $1.value }.map { "\($0.key): \(ProgressLine.grouped($0.value))" }
        print(summary + (parts.isEmpty ? "" : "\n  " + parts.joined(separator: ", ")))
        if let inputError {
            FileHandle.standardError.write(Data("raffle: error: \(inputError) (stopped after \(read) entries were read)\n".utf8))
            throw ExitCode(1)
        }
        if let failure = tally.failure.withLock({ $0 }) {
            FileHandle.standardError.write(Data("raffle: error: \(failure)\n".utf8))
            throw ExitCode(1)
        }
    }
}

/// Outcomes counted across the batch tasks.
final class SubmitTally: Sendable {
    let counts = Mutex<[String: Int]>([:])
    let failure = Mutex<String?>(nil)
    private let answeredCount = Atomic<Int>(0)

    var answered: Int { answeredCount.load(ordering: .relaxed) }

    func record(_ outcomes: [EntryOutcome]) {
        var local: [EntryOutcome: Int] = [:]
        for o in outcomes { local[o, default: 0] += 1 }
        counts.withLock { c in for (o, n) in local { c[o.description, default: 0] += n } }
        answeredCount.add(outcomes.count, ordering: .relaxed)
    }
}

extension EntryFile.Format: ExpressibleByArgument {}
