import Foundation
import RaffleAdmission
import RaffleCore
import RaffleLedger

/// A response of the JSON admin and read API.
struct AdminResponse {
    var status: Int
    var kind: BodyKind
    var body: [UInt8]
    /// Sent only once this is durable (raffle created or closed).
    var commit: CommitPoint?

    init(status: Int, kind: BodyKind = .json, body: [UInt8], commit: CommitPoint? = nil) {
        self.status = status
        self.kind = kind
        self.body = body
        self.commit = commit
    }

    init(status: Int, json: [UInt8], commit: CommitPoint? = nil) {
        self.init(status: status, kind: .json, body: json, commit: commit)
    }
}

/// An admin response now (health, metrics, refusals) or after a ledger call (raffles, draws, exports:
/// a shared ledger answers them with a database round trip, so they run in a task off the event loop).
enum AdminAnswer: Sendable {
    case now(AdminResponse)
    case later(@Sendable () async -> AdminResponse)

    /// The response, waiting for it if it comes later.
    func response() async -> AdminResponse {
        switch self {
        case .now(let response): response
        case .later(let work): await work()
        }
    }
}

/// The admin and read API, as JSON over HTTP/2 or HTTP/1.1 on the main port (see README "Admin API"):
///
/// | method | path | does | key |
/// |---|---|---|---|
/// | GET | `/healthz` | 200 while the process serves (alive), with the ledger's state | — |
/// | GET | `/readyz` | 200 when the ledger is healthy and the server is not shutting down, else 503 | — |
/// | GET | `/metrics` | Prometheus text | — |
/// | GET | `/v1/raffles` | every raffle | — |
/// | GET | `/v1/raffles/{id}` | one raffle | — |
/// | GET | `/v1/raffles/{id}/winners` | the draw (seed, entry-list hash, winners), 409 before it | — |
/// | GET | `/v1/stats` | ledger counters | admin |
/// | POST | `/v1/raffles` | create: `{"title", "closesAt" or "durationSeconds", "opensAt"?, "winners"?, "maxTicketsPerUser"?}` | admin |
/// | POST | `/v1/raffles/{id}/close` | close now, reveal the seed, draw | admin |
/// | POST | `/v1/raffles/{id}/draw` | same as close (idempotent) | admin |
/// | GET | `/v1/raffles/{id}/entries/{userID}` | whether that user has entered | admin |
/// | GET | `/v1/raffles/{id}/export?format=csv\|ndjson` | the entries in canonical order | admin |
///
/// Admin calls carry `authorization: Bearer <admin key>`: none is 401, a wrong one 403. With a
/// separate admin listener (`--admin-port`), the main port answers admin routes and `/metrics`
/// with 404 and the admin listener serves them.
struct AdminAPI: Sendable {
    let ledger: any Ledger
    let admission: AdmissionController
    let metrics: ServerMetrics
    let durability: LedgerDurability
    let now: @Sendable () -> Int64
    /// The admin keys.
    let keys: AdminKeys
    /// Whether the process is shutting down (for `/readyz`).
    let state: ServerState
    /// Whether this listener serves the admin routes and `/metrics` (false on the main port when a
    /// separate admin listener runs).
    var servesAdmin = true
    /// Whether this listener takes entries on `POST /v1/entries` (false on the admin listener).
    var servesEntries = true

    /// Body of a create request.
    struct CreateRequest: Decodable {
        var title: String
        var opensAt: Int64?
        var closesAt: Int64?
        var durationSeconds: Int64?
        var winners: Int?
        var maxTicketsPerUser: UInt32?
        var expectedEntries: Int?
    }

    static func errorJSON(_ message: String) -> [UInt8] {
        json(["error": message])
    }

    static func json(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(value)) ?? Data("{}".utf8)) + [0x0A]
    }

    /// Who may call a route.
    enum Access {
        /// Anyone (health, public reads, the metrics of the listener that serves them).
        case open
        /// An admin key.
        case admin
    }

    /// Answers one request. `authorization` is the request's `authorization` header value (empty: none).
    /// Answers that need the ledger (`.later`) are refused with 503 instead: the fuzz targets drive
    /// a connection on one thread with no task to run them (`FuzzServer`). Off in a server.
    var answersOnlyAtOnce = false

    func handle(get: Bool, post: Bool, path: String, body: [UInt8], authorization: [UInt8] = []) -> AdminAnswer {
        let answer = route(get: get, post: post, path: path, body: body, authorization: authorization)
        if answersOnlyAtOnce, case .later = answer {
            return .now(AdminResponse(status: 503, json: Self.errorJSON("not answered in this mode")))
        }
        return answer
    }

    private func route(get: Bool, post: Bool, path fullPath: String, body: [UInt8], authorization: [UInt8]) -> AdminAnswer {
        let (path, query) = split(fullPath)
        let parts = path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        let t = now()
        switch (get, post, parts.count) {
        case (true, _, 1) where parts[0] == "healthz":
            // Alive: the process answers. Whether it can take entries is /readyz's question.
            return .now(AdminResponse(
                status: 200,
                json: Self.json([
                    "status": "ok", "durability": durability.rawValue,
                    "ledger": ledger.failureReason != nil ? "failing" : ledger.stallReason != nil ? "stalled" : "ok",
                ])))
        case (true, _, 1) where parts[0] == "readyz":
            if let failure = ledger.failureReason {
                return .now(AdminResponse(status: 503, json: Self.json(["status": "failing", "error": failure])))
            }
            if let stall = ledger.stallReason {
                return .now(AdminResponse(status: 503, json: Self.json(["status": "stalled", "error": stall])))
            }
            if state.isShuttingDown { return .now(AdminResponse(status: 503, json: Self.json(["status": "shutting_down"]))) }
            return .now(AdminResponse(status: 200, json: Self.json(["status": "ready", "durability": durability.rawValue])))
        case (true, _, 1) where parts[0] == "metrics":
            guard servesAdmin else { return .now(onAdminListener(path)) }
            return .now(AdminResponse(status: 200, kind: .text, body: metrics.render(stats: ledger.stats(), admission: admission, now: monotonicNanoseconds())))
        case (true, _, 2) where parts == ["v1", "stats"]:
            if let refusal = authorize(authorization, path) { return .now(refusal) }
            return .now(AdminResponse(status: 200, json: Self.json(ledger.stats())))
        case (true, _, 2) where parts == ["v1", "raffles"]:
            return .later { [self] in
                do throws(LedgerError) {
                    return AdminResponse(status: 200, json: Self.json(try await ledger.raffles(now: t)))
                } catch {
                    return failure(error)
                }
            }
        case (_, true, 2) where parts == ["v1", "raffles"]:
            if let refusal = authorize(authorization, path) { return .now(refusal) }
            return .later { [self] in await create(body, now: t) }
        case (_, _, 3...) where parts[0] == "v1" && parts[1] == "raffles":
            guard let id = UInt64(parts[2]) else { return .now(notFound("raffle id must be a positive integer")) }
            let rest = Array(parts[3...])
            if Self.access(rest: rest, post: post) == .admin, let refusal = authorize(authorization, path) { return .now(refusal) }
            return .later { [self] in
                do throws(LedgerError) {
                    return try await raffleRoute(id: id, rest: rest, get: get, post: post, query: query, now: t)
                } catch {
                    return failure(error)
                }
            }
        default:
            if parts.first == "v1" || parts.first == "healthz" || parts.first == "readyz" || parts.first == "metrics" {
                return .now(AdminResponse(status: 405, json: Self.errorJSON("method not allowed for \(path)")))
            }
            return .now(notFound("no route for \(path)"))
        }
    }

    /// Who may call `/v1/raffles/{id}/<rest>`: reading a raffle and its draw is open (verification
    /// needs it); closing, drawing, exporting and per-user lookups need an admin key.
    static func access(rest: [String], post: Bool) -> Access {
        if post { return .admin }
        switch rest.first {
        case nil, "winners": return .open
        default: return .admin
        }
    }

    /// nil when `authorization` carries an admin key; otherwise the refusal (401 none, 403 wrong).
    private func authorize(_ authorization: [UInt8], _ path: String) -> AdminResponse? {
        guard servesAdmin else { return onAdminListener(path) }
        switch keys.check(authorization: authorization) {
        case .allowed:
            return nil
        case .missing:
            return AdminResponse(status: 401, json: Self.errorJSON("\(path) needs an admin key: send authorization: Bearer <admin key>"))
        case .wrong:
            return AdminResponse(status: 403, json: Self.errorJSON("the admin key is not valid"))
        case .noKeysConfigured:
            return AdminResponse(status: 403, json: Self.errorJSON("the admin API is disabled: no admin key is configured (raffled --admin-keys FILE)"))
        }
    }

    private func onAdminListener(_ path: String) -> AdminResponse {
        notFound("\(path) is served on the admin listener (--admin-port), not on this port")
    }

    private func raffleRoute(id: UInt64, rest: [String], get: Bool, post: Bool, query: [String: String], now t: Int64) async throws(LedgerError)
        -> AdminResponse
    {
        switch (get, post, rest.first, rest.count) {
        case (true, _, nil, 0):
            guard let info = try await ledger.raffle(id, now: t) else { return notFound("raffle \(id) does not exist") }
            return AdminResponse(status: 200, json: Self.json(info))
        case (_, true, "close", 1), (_, true, "draw", 1):
            switch await ledger.closeRaffle(id, now: t) {
            case .success(let (info, commit)): return AdminResponse(status: 200, json: Self.json(info), commit: commit)
            case .failure(let error): return failure(error)
            }
        case (true, _, "winners", 1):
            guard let info = try await ledger.raffle(id, now: t) else { return notFound("raffle \(id) does not exist") }
            guard let draw = info.draw else {
                return AdminResponse(status: 409, json: Self.errorJSON("raffle \(id) has not been drawn yet (closes at \(info.spec.closesAt))"))
            }
            return AdminResponse(status: 200, json: Self.json(draw))
        case (true, _, "entries", 2):
            guard let user = UInt64(rest[1]) else { return notFound("user id must be a positive integer") }
            guard let entered = try await ledger.hasEntry(userID: user, raffle: id) else { return notFound("raffle \(id) does not exist") }
            return AdminResponse(status: 200, json: Self.json(EntryStatus(raffleId: String(id), userId: String(user), entered: entered)))
        case (true, _, "export", 1):
            guard let entries = try await ledger.entries(of: id) else { return notFound("raffle \(id) does not exist") }
            switch query["format"] ?? "csv" {
            case "csv": return AdminResponse(status: 200, kind: .csv, body: Export.csv(entries))
            case "ndjson": return AdminResponse(status: 200, kind: .ndjson, body: Export.ndjson(entries))
            default: return AdminResponse(status: 400, json: Self.errorJSON("format must be csv or ndjson"))
            }
        default:
            return AdminResponse(status: 404, json: Self.errorJSON("no route for this raffle path"))
        }
    }

    /// Ids as decimal strings, as everywhere in the JSON API (`JSONID`).
    struct EntryStatus: Encodable {
        var raffleId: String
        var userId: String
        var entered: Bool
    }

    private func create(_ body: [UInt8], now t: Int64) async -> AdminResponse {
        let request: CreateRequest
        do {
            request = try JSONDecoder().decode(CreateRequest.self, from: Data(body))
        } catch {
            return AdminResponse(status: 400, json: Self.errorJSON("body must be JSON like {\"title\":\"Drop\",\"durationSeconds\":600}: \(error)"))
        }
        let opensAt = request.opensAt ?? t
        guard let closesAt = request.closesAt ?? request.durationSeconds.map({ opensAt + $0 * 1_000 }) else {
            return AdminResponse(status: 400, json: Self.errorJSON("give closesAt (ms since the epoch) or durationSeconds"))
        }
        let spec = RaffleSpec(
            title: request.title, opensAt: opensAt, closesAt: closesAt, winners: request.winners ?? 1,
            maxTicketsPerUser: request.maxTicketsPerUser ?? 1, expectedEntries: request.expectedEntries)
        switch await ledger.createRaffle(spec, now: t) {
        case .success(let (info, commit)): return AdminResponse(status: 201, json: Self.json(info), commit: commit)
        case .failure(let error): return failure(error)
        }
    }

    private func failure(_ error: LedgerError) -> AdminResponse {
        let status =
            switch error.kind {
            case .notFound: 404
            case .invalid: 400
            case .conflict: 409
            case .unavailable: 503
            }
        return AdminResponse(status: status, json: Self.errorJSON(error.message))
    }

    private func notFound(_ message: String) -> AdminResponse { AdminResponse(status: 404, json: Self.errorJSON(message)) }

    private func split(_ path: String) -> (String, [String: String]) {
        guard let q = path.firstIndex(of: "?") else { return (path, [:]) }
        var query: [String: String] = [:]
        for pair in path[path.index(after: q)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            query[String(kv[0])] = kv.count > 1 ? String(kv[1]) : ""
        }
        return (String(path[..<q]), query)
    }
}
