import Foundation
import RaffleWire
import RaffleTestSupport

/// The golden vectors in Protocol/vectors, loaded for tests.
struct Vector: CustomStringConvertible, Sendable {
    let name: String
    let valid: Bool
    /// The vector's JSON text; parsed on use so the vector stays `Sendable` for parameterised tests.
    let data: Data
    let bytes: [UInt8]

    var json: [String: Any] { (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] ?? [:] }

    var description: String { (valid ? "valid/" : "invalid/") + name }
    var direction: String { json["direction"] as? String ?? "client_to_server" }
    var decoderConfig: [String: Any] { json["decoder"] as? [String: Any] ?? [:] }
    var endOfInput: Bool { decoderConfig["end_of_input"] as? Bool ?? false }

    /// The decoder the vector asks for: receiver from its direction, limits and checksum policy from
    /// its "decoder" object.
    var decoder: FrameDecoder {
        let c = decoderConfig
        let receiver: FrameDecoder.Receiver =
            switch c["receiver"] as? String ?? (direction == "client_to_server" ? "server" : "client") {
            case "server": .server
            case "client": .client
            default: .any
            }
        return FrameDecoder(
            limits: FrameLimits(
                maxPayloadBytes: c["max_payload_bytes"] as? Int ?? FrameLimits.default.maxPayloadBytes,
                maxEntriesPerBatch: c["max_entries_per_batch"] as? Int ?? FrameLimits.default.maxEntriesPerBatch),
            receiver: receiver,
            requireChecksum: c["require_checksum"] as? Bool ?? false)
    }

    static let directory: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("Protocol/vectors")

    static func load(_ kind: String) -> [Vector] {
        let dir = directory.appendingPathComponent(kind)
        let files = (try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []
        return files.filter { $0.hasSuffix(".json") }.sorted().compactMap { file in
            guard let data = FileManager.default.contents(atPath: dir.appendingPathComponent(file).path),
                let json = try? JSONSerialization.jsonObject(with: data) as? [String: Any],
                let hex = json["hex"] as? String, let bytes = [UInt8](hex: hex)
            else { return nil }
            return Vector(name: String(file.dropLast(5)), valid: kind == "valid", data: data, bytes: bytes)
        }
    }

    static let valid = load("valid")
    static let invalid = load("invalid")
}

enum VectorError: Error, CustomStringConvertible {
    case bad(String)
    var description: String { switch self { case .bad(let s): s } }
}

/// Builds the owned frame a valid vector's "frame" object describes.
func expectedFrame(_ v: Vector) throws -> Frame {
    guard let f = v.json["frame"] as? [String: Any], let type = f["type"] as? String,
        let body = f[type] as? [String: Any], let id = u64(f["request_id"])
    else { throw VectorError.bad("\(v): no frame") }
    var flags = FrameFlags()
    for name in f["flags"] as? [String] ?? [] {
        if name == "checksum" {
            flags.insert(.checksum)
        } else if name.hasPrefix("bit"), let bit = Int(name.dropFirst(3)) {
            flags.insert(FrameFlags(rawValue: 1 << bit))
        } else {
            throw VectorError.bad("\(v): flag \(name)")
        }
    }
    let payload: Frame.Body
    switch type {
    case "entry_batch":
        let entries = try (body["entries"] as? [[String: Any]] ?? []).map { e -> Entry in
            guard let user = u64(e["user_id"]), let t = e["tickets"] as? Int, let r = e["reserved"] as? Int else {
                throw VectorError.bad("\(v): entry")
            }
            return Entry(userID: user, tickets: UInt32(t), reserved: UInt32(r))
        }
        payload = .entryBatch(raffleID: try req(u64(body["raffle_id"]), v), entries: entries)
    case "batch_ack":
        let outcomes = try (body["outcomes"] as? [String] ?? []).map { try req(EntryOutcome(name: $0), v) }
        payload = .batchAck(raffleID: try req(u64(body["raffle_id"]), v), outcomes: outcomes)
    case "throttled":
        let reason: ThrottleReason =
            switch body["reason"] as? String {
            case "rate_limited": .rateLimited
            case "server_busy": .serverBusy
            case "waiting_room": .waitingRoom
            default: throw VectorError.bad("\(v): reason")
            }
        payload = .throttled(retryAfterMilliseconds: UInt32(try req(body["retry_after_ms"] as? Int, v)), reason: reason)
    case "error":
        let code = try req(ProtocolErrorCode(name: try req(body["code"] as? String, v)), v)
        guard Int(code.rawValue) == body["value"] as? Int else { throw VectorError.bad("\(v): code value") }
        payload = .error(code: code, message: try req(body["message"] as? String, v))
    case "ping", "pong":
        let opaque = try req([UInt8](hex: try req(body["opaque"] as? String, v)), v)
        let value = opaque.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
        payload = type == "ping" ? .ping(value) : .pong(value)
    default:
        throw VectorError.bad("\(v): type \(type)")
    }
    return Frame(requestID: id, flags: flags, body: payload)
}

func u64(_ any: Any?) -> UInt64? { (any as? String).flatMap { UInt64($0) } }

func req<T>(_ value: T?, _ v: Vector) throws -> T {
    guard let value else { throw VectorError.bad("\(v): missing field") }
    return value
}

extension [UInt8] {
    init?(hex: String) {
        guard hex.count.isMultiple(of: 2) else { return nil }
        var out: [UInt8] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 2)
            guard let byte = UInt8(hex[i..<j], radix: 16) else { return nil }
            out.append(byte)
            i = j
        }
        self = out
    }
}

/// Decodes `bytes` with `decoder`, copying the view out so it can be compared after the borrow ends.
func decodeOwned(_ bytes: [UInt8], _ decoder: FrameDecoder, endOfInput: Bool = false) throws(ProtocolError) -> (Frame, Int)? {
    let result: Result<(Frame, Int)?, ProtocolError> = bytes.withUnsafeBytes { raw in
        do throws(ProtocolError) {
            guard let view = try decoder.decode(raw, endOfInput: endOfInput) else { return .success(nil) }
            return .success((Frame(view), view.frameLength))
        } catch {
            return .failure(error)
        }
    }
    return try result.get()
}
