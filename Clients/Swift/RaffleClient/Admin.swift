import Foundation
public import RaffleCore

extension RaffleClient {
    /// Creates a raffle open from now (or `opensAt`, ms since the epoch) for `duration`.
    /// `expectedEntries`: how many entries you expect, so the server sizes the raffle's index once
    /// (a drop never waits for it to grow); a hint, not a limit.
    public func createRaffle(
        title: String, duration: Duration, winners: Int = 1, maxTicketsPerUser: UInt32 = 1, opensAt: Int64? = nil,
        expectedEntries: Int? = nil
    ) async throws -> RaffleInfo {
        struct Body: Encodable {
            var title: String
            var durationSeconds: Int64
            var winners: Int
            var maxTicketsPerUser: UInt32
            var opensAt: Int64?
            var expectedEntries: Int?
        }
        let body = Body(
            title: title, durationSeconds: max(duration.components.seconds, 1), winners: winners, maxTicketsPerUser: maxTicketsPerUser,
            opensAt: opensAt, expectedEntries: expectedEntries)
        return try await adminJSON("POST", "/v1/raffles", body: Array(try JSONEncoder().encode(body)), expect: 201)
    }

    /// Every raffle.
    public func raffles() async throws -> [RaffleInfo] { try await adminJSON("GET", "/v1/raffles") }

    /// One raffle.
    public func raffle(_ id: UInt64) async throws -> RaffleInfo { try await adminJSON("GET", "/v1/raffles/\(id)") }

    /// Closes a raffle now, reveals its seed and draws (idempotent).
    public func close(_ id: UInt64) async throws -> RaffleInfo { try await adminJSON("POST", "/v1/raffles/\(id)/close") }

    /// Draws a raffle (closing it first if needed); the same as `close`.
    public func draw(_ id: UInt64) async throws -> RaffleInfo { try await adminJSON("POST", "/v1/raffles/\(id)/draw") }

    /// The published draw: seed, entry-list hash, winners.
    public func winners(_ id: UInt64) async throws -> DrawResult { try await adminJSON("GET", "/v1/raffles/\(id)/winners") }

    /// Ledger counters.
    public func stats() async throws -> [String: JSONValue] { try await adminJSON("GET", "/v1/stats") }

    /// The raffle's entries as CSV (`user_id,tickets`) or NDJSON, in canonical order.
    public func export(_ id: UInt64, format: String = "csv") async throws -> String {
        let reply = try await transport.admin(method: "GET", path: "/v1/raffles/\(id)/export?format=\(format)", body: nil, authorization: adminAuthorization)
        guard reply.status == 200 else { throw adminError(reply) }
        return String(decoding: reply.body, as: UTF8.self)
    }

    func adminJSON<T: Decodable>(_ method: String, _ path: String, body: [UInt8]? = nil, expect: Int = 200) async throws -> T {
        let reply: AdminReply
        do { reply = try await transport.admin(method: method, path: path, body: body, authorization: adminAuthorization) } catch let e as RaffleClientError {
            throw e
        } catch {
            throw RaffleClientError(.connectionFailed, "\(error)")
        }
        guard reply.status == expect else { throw adminError(reply) }
        do { return try JSONDecoder().decode(T.self, from: Data(reply.body)) } catch {
            throw RaffleClientError(.invalidResponse, "unexpected JSON from \(path): \(error)")
        }
    }

    func adminError(_ reply: AdminReply) -> RaffleClientError {
        let text = String(decoding: reply.body, as: UTF8.self)
        let message = (try? JSONDecoder().decode([String: String].self, from: Data(reply.body)))?["error"] ?? text
        return RaffleClientError(.http(reply.status), "HTTP \(reply.status): \(message)")
    }
}

/// Any JSON value (for `stats()`).
public enum JSONValue: Decodable, Sendable, Hashable, CustomStringConvertible {
    case number(Double), string(String), bool(Bool), null

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let b = try? c.decode(Bool.self) { self = .bool(b) }
        else if let n = try? c.decode(Double.self) { self = .number(n) }
        else if let s = try? c.decode(String.self) { self = .string(s) }
        else { self = .null }
    }

    public var description: String {
        switch self {
        case .number(let n): n == n.rounded() && abs(n) < 1e15 ? String(Int64(n)) : String(n)
        case .string(let s): s
        case .bool(let b): String(b)
        case .null: "null"
        }
    }
}
