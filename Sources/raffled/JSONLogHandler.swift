import Foundation
import Logging

/// `--log-format json`: one JSON object per line on standard error —
/// `{"ts":"2026-11-24T05:05:30.123Z","level":"info","label":"raffled","source":"RaffleServer","message":"…","peer":"…",…}`
/// — with the metadata's keys at the top level (values as strings), for log shippers that parse
/// JSON. swift-log ships no JSON handler; this is the smallest one that escapes correctly.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level
    var metadata: Logger.Metadata = [:]
    var metadataProvider: Logger.MetadataProvider?

    init(label: String, level: Logger.Level) {
        self.label = label
        logLevel = level
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields = metadata
        if let provided = metadataProvider?.get() { fields.merge(provided) { _, new in new } }
        if let extra = event.metadata { fields.merge(extra) { _, new in new } }
        var line = "{\"ts\":\"\(Self.timestamp())\",\"level\":\"\(event.level.rawValue)\",\"label\":\(Self.quoted(label))"
        line += ",\"source\":\(Self.quoted(event.source)),\"message\":\(Self.quoted("\(event.message)"))"
        for key in fields.keys.sorted() where !["ts", "level", "label", "source", "message"].contains(key) {
            line += ",\(Self.quoted(key)):\(Self.quoted("\(fields[key]!)"))"
        }
        line += "}\n"
        FileHandle.standardError.write(Data(line.utf8))
    }

    /// A JSON string literal for `text` (RFC 8259 escapes; control characters as \u00XX).
    static func quoted(_ text: String) -> String {
        var out = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }

    static func timestamp() -> String {
        Date.now.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: true).timeZone(separator: .omitted))
    }
}
