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
            a summary follows, saying how often the server throttled the stream and why. Exit status 1 if \
            the input has a bad line (with --rejects: skipped and written there instead) or a batch failed.
            """
    )
    @OptionGroup var options: ServerOptions
    @Argument(help: "Raffle id.") var id: String
    @Argument(help: "Entries file; - or nothing reads stdin.") var file: String?
    @Option(help: "csv or ndjson (default: from the extension or the first line).") var format: EntryFile.Format?
    @Option(help: "Entries per batch.") var batch = 1_000
    @Option(help: "Batches in flight.") var window = 8
    @Flag(help: "No progress line.") var quiet = false
    @Option(
        help: """
            Write what was not entered to this file, one JSON object a line: input lines that cannot be read \
            (then skipped instead of stopping the run) and entries the server refused, with the reason.
            """)
    var rejects: String?

    func validate() throws {
        guard (1...4_096).contains(batch) else { throw ValidationError("--batch must be 1 to 4096 (the server's default limit)") }
        guard (1...256).contains(window) else { throw ValidationError("--window must be 1 to 256") }
    }

    func run() async throws {
        let raffle = try raffleID(id)
        var input = try EntryFile(path: file, format: format)
        let rejectsFile = try rejects.map { try RejectsFile(path: $0) }
        input.skipBadLines = rejectsFile != nil
        let client = try options.client(window: window)
        let stream = client.bulkStream(raffle: raffle)
        let tally = SubmitTally(rejects: rejectsFile)
        var progress = ProgressLine(enabled: !quiet)
        let source = EntrySource(input, tally: tally)
        let batch = self.batch
        // `window` senders pull batches from the file as their previous batch is acknowledged:
        // memory stays bounded whatever the file's size.
        let sending = Task {
            defer { tally.finished.store(true, ordering: .releasing) }
            try await stream.send(batches: { try await source.next(batch) }) { entries, outcomes in tally.record(outcomes, of: entries) }
        }
        var sendError: (any Error)?
        while !tally.finished.load(ordering: .acquiring) {
            try? await Task.sleep(for: .milliseconds(200))
            let (read, consumed, total) = await source.position
            progress.update(done: read, answered: tally.answered, bytes: consumed, totalBytes: total)
        }
        do { try await sending.value } catch { sendError = error }
        if let sendError { tally.failure.withLock { $0 = $0 ?? "\(sendError)" } }
        let inputError = await source.failure
        let read = await source.position.read
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
        let throttled = stream.throttled
        if !throttled.isEmpty {
            let total = throttled.values.reduce(0, +)
            let why = throttled.sorted { $0.value > $1.value }.map { "\($0.key): \(ProgressLine.grouped($0.value))" }.joined(separator: ", ")
            var line = "  throttled \(ProgressLine.grouped(total)) time\(total == 1 ? "" : "s") (\(why)); each batch went back at the server's retry-after"
            if throttled[.rateLimited] != nil && !options.hasAPIKey {
                line += "\n  without an API key the server's anonymous limit applies (per connection): pass --api-key (or $RAFFLE_API_KEY) for your own limit"
            }
            print(line)
        }
        if let rejectsFile {
            try rejectsFile.close()
            let written = rejectsFile.count
            print("  \(ProgressLine.grouped(written)) reject\(written == 1 ? "" : "s") (unreadable lines, refused entries) written to \(rejects ?? "")")
        }
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
    /// Every sender has stopped.
    let finished = Atomic<Bool>(false)
    private let answeredCount = Atomic<Int>(0)

    var answered: Int { answeredCount.load(ordering: .relaxed) }

    /// Where rejected lines and entries go (with --rejects).
    let rejects: RejectsFile?

    init(rejects: RejectsFile?) { self.rejects = rejects }

    func record(_ outcomes: [EntryOutcome], of entries: [Entry]) {
        var local: [EntryOutcome: Int] = [:]
        for o in outcomes { local[o, default: 0] += 1 }
        if let rejects {
            for (entry, outcome) in zip(entries, outcomes) where !outcome.isEntered { rejects.write(entry: entry, reason: outcome.description) }
        }
        counts.withLock { c in for (o, n) in local { c[o.description, default: 0] += n } }
        answeredCount.add(outcomes.count, ordering: .relaxed)
    }
}

extension EntryFile.Format: ExpressibleByArgument {}

/// Hands out the input file's batches to the bulk stream's senders, one at a time.
actor EntrySource {
    private var file: EntryFile
    private let tally: SubmitTally
    private(set) var failure: (any Error)?
    private(set) var exhausted = false
    private var read = 0

    init(_ file: EntryFile, tally: SubmitTally) {
        self.file = file
        self.tally = tally
    }

    /// The next batch; nil at the end, after a bad line (kept in `failure`), or once a batch failed.
    func next(_ count: Int) throws -> [Entry]? {
        guard !exhausted, tally.failure.withLock({ $0 == nil }) else { return nil }
        do {
            let entries = try file.next(count)
            if !file.skipped.isEmpty {
                for reason in file.skipped { tally.rejects?.write(line: reason) }
                file.skipped.removeAll()
            }
            if entries.isEmpty {
                exhausted = true
                return nil
            }
            read += entries.count
            return entries
        } catch {
            failure = error
            exhausted = true
            return nil
        }
    }

    /// Entries read, input bytes consumed, and the input's size if known.
    var position: (read: Int, consumed: Int64, total: Int64?) { (read, file.bytesConsumed, file.totalBytes) }
}

/// `--rejects FILE`: one JSON object a line — `{"input": "line 7: expected …", "reason": "unreadable"}`
/// for an input line that could not be read, `{"userId": 5, "tickets": 9, "reason": "invalid_tickets"}`
/// for an entry the server refused.
final class RejectsFile: Sendable {
    private let handle: Mutex<FileHandle>
    private let written = Atomic<Int>(0)

    init(path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw ValidationError("--rejects: cannot write \(path)")
        }
        self.handle = Mutex(handle)
    }

    /// Lines written.
    var count: Int { written.load(ordering: .relaxed) }

    func write(line reason: String) { append(["input": reason, "reason": "unreadable"]) }

    func write(entry: Entry, reason: String) {
        append(["userId": entry.userID, "tickets": UInt64(entry.tickets), "reason": reason] as [String: any Sendable])
    }

    func close() throws { try handle.withLock { try $0.close() } }

    private func append(_ object: [String: any Sendable]) {
        guard let data = try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]) else { return }
        handle.withLock { $0.write(data + Data("\n".utf8)) }
        written.add(1, ordering: .relaxed)
    }
}
