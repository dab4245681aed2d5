import Foundation
import RaffleCore
import RaffleWire

/// Reads entries from a CSV or NDJSON file (or stdin) in chunks, so a file of any size streams
/// through in constant memory.
///
/// - CSV: one `user_id[,tickets]` per line; a first line that is not numbers (a header such as
///   `user_id,tickets`) is skipped; tickets default to 1.
/// - NDJSON: one object per line with `userId` (or `user_id`; a number or a decimal string) and
///   optional `tickets`.
/// Blank lines are skipped. Anything else stops the read with `EntryFileError` naming the line.
struct EntryFile {
    enum Format: String, CaseIterable {
        case csv, ndjson
    }

    private let handle: FileHandle
    private let format: Format?
    /// Bytes in the file (nil for stdin or a pipe): the progress line's 100 %.
    let totalBytes: Int64?
    private(set) var bytesRead: Int64 = 0
    /// Bytes of the input turned into entries so far (read minus the unparsed rest).
    var bytesConsumed: Int64 { bytesRead - Int64(carry.count - position) }
    private(set) var line = 0
    private var carry: [UInt8] = []
    /// Where the unread part of `carry` starts.
    private var position = 0
    private var detected: Format?
    private var eof = false
    private var failure: (any Error)?
    /// Skip a line that cannot be read (keeping why in `skipped`) instead of stopping. Default false.
    var skipBadLines = false
    /// Lines skipped, with why (only with `skipBadLines`); the caller takes them as it goes.
    var skipped: [String] = []

    init(path: String?, format: Format?) throws {
        if let path, path != "-" {
            guard let h = FileHandle(forReadingAtPath: path) else { throw EntryFileError("cannot open \(path)") }
            handle = h
            let size = (try? FileManager.default.attributesOfItem(atPath: path)[.size] as? NSNumber)?.int64Value
            totalBytes = size
            self.format = format ?? (path.hasSuffix(".ndjson") || path.hasSuffix(".jsonl") ? .ndjson : path.hasSuffix(".csv") ? .csv : nil)
        } else {
            handle = FileHandle.standardInput
            totalBytes = nil
            self.format = format
        }
    }

    /// The next up to `count` entries; empty at the end of the input. The entries before a bad line
    /// are returned first; the next call throws for the bad line.
    mutating func next(_ count: Int) throws -> [Entry] {
        if let failure {
            self.failure = nil
            throw failure
        }
        var out: [Entry] = []
        out.reserveCapacity(count)
        while out.count < count {
            do {
                guard let lineBytes = try nextLine() else { break }
                line += 1
                if let entry = try parse(lineBytes) { out.append(entry) }
            } catch let error as EntryFileError where skipBadLines {
                skipped.append(error.description)
            } catch {
                if out.isEmpty { throw error }
                failure = error
                break
            }
        }
        return out
    }

    private mutating func nextLine() throws -> ArraySlice<UInt8>? {
        while true {
            if let nl = carry[position...].firstIndex(of: 0x0A) {
                defer { position = nl + 1 }
                return carry[position..<nl]
            }
            if eof {
                if position == carry.count { return nil }
                defer { position = carry.count }
                return carry[position...]
            }
            let chunk = try handle.read(upToCount: 1 << 20) ?? Data()
            if chunk.isEmpty { eof = true } else {
                bytesRead += Int64(chunk.count)
                carry.removeSubrange(..<position)  // keep only the unfinished line, then append
                position = 0
                carry.append(contentsOf: chunk)
            }
        }
    }

    private mutating func parse(_ raw: ArraySlice<UInt8>) throws -> Entry? {
        var bytes = raw
        while let last = bytes.last, last == 0x0D || last == 0x20 || last == 0x09 { bytes.removeLast() }
        while let first = bytes.first, first == 0x20 || first == 0x09 { bytes.removeFirst() }
        if bytes.isEmpty { return nil }
        let format = self.format ?? detected ?? (bytes.first == UInt8(ascii: "{") ? .ndjson : .csv)
        detected = format
        switch format {
        case .ndjson:
            // The id as a number or a decimal string (what the server's exports write).
            struct Row: Decodable {
                var userId: UInt64?
                var user_id: UInt64?
                var tickets: UInt32?
                private enum CodingKeys: String, CodingKey { case userId, user_id, tickets }
                init(from decoder: any Decoder) throws {
                    let c = try decoder.container(keyedBy: CodingKeys.self)
                    userId = c.contains(.userId) ? try JSONID.decode(c, .userId) : nil
                    user_id = c.contains(.user_id) ? try JSONID.decode(c, .user_id) : nil
                    tickets = try c.decodeIfPresent(UInt32.self, forKey: .tickets)
                }
            }
            guard let row = try? JSONDecoder().decode(Row.self, from: Data(bytes)), let user = row.userId ?? row.user_id else {
                throw EntryFileError("line \(line): expected {\"userId\": N, \"tickets\": N}, got: \(Self.show(bytes))")
            }
            return Entry(userID: user, tickets: row.tickets ?? 1)
        case .csv:
            let comma = bytes.firstIndex(of: UInt8(ascii: ","))
            let user = Self.number(bytes[..<(comma ?? bytes.endIndex)])
            let tickets = comma.map { Self.number(bytes[bytes.index(after: $0)...]) } ?? 1
            guard let user, let tickets, tickets <= UInt64(UInt32.max) else {
                if line == 1 { return nil }  // a header line
                throw EntryFileError("line \(line): expected user_id[,tickets], got: \(Self.show(bytes))")
            }
            return Entry(userID: user, tickets: UInt32(tickets))
        }
    }

    /// A decimal number with optional surrounding spaces, or nil (empty, other characters, overflow).
    /// Byte by byte: a million-line file spends its time here.
    private static func number(_ cell: ArraySlice<UInt8>) -> UInt64? {
        var value: UInt64 = 0
        var digits = 0
        var trailing = false
        for b in cell {
            if b == 0x20 || b == 0x09 {
                if digits > 0 { trailing = true }
                continue
            }
            guard !trailing, b >= 0x30, b <= 0x39 else { return nil }
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (sum, o2) = times10.addingReportingOverflow(UInt64(b - 0x30))
            if o1 || o2 { return nil }
            value = sum
            digits += 1
        }
        return digits > 0 ? value : nil
    }

    private static func show(_ bytes: ArraySlice<UInt8>) -> String {
        let text = String(decoding: bytes.prefix(80), as: UTF8.self)
        return bytes.count > 80 ? text + "…" : text
    }
}

/// A line of the input that is not an entry, or an unreadable file.
struct EntryFileError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
