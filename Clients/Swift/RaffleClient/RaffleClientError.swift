public import RaffleWire

/// Why a client call failed.
public struct RaffleClientError: Error, Sendable, CustomStringConvertible {
    /// What kind of failure.
    public enum Kind: Sendable, Hashable {
        /// The connection could not be made or was lost. Retryable.
        case connectionFailed
        /// No answer in time. Retryable.
        case timedOut
        /// The server refused with a protocol error code (retryable only for `0x02xx` codes).
        case server(ProtocolErrorCode)
        /// The server's reply was not what the protocol says.
        case invalidResponse
        /// The call's deadline passed; `underlying` is the last failure.
        case deadlineExceeded
        /// The retry budget is spent; `underlying` is the last failure.
        case retryBudgetExhausted
        /// The request itself is invalid (e.g. an empty batch).
        case invalidRequest
        /// An admin call got this HTTP status.
        case http(Int)
    }

    public var kind: Kind
    public var message: String
    /// For deadline and budget failures: what went wrong on the last attempt.
    public var underlying: String?

    public init(_ kind: Kind, _ message: String, underlying: String? = nil) {
        self.kind = kind
        self.message = message
        self.underlying = underlying
    }

    /// Whether retrying the same call may succeed.
    public var isRetryable: Bool {
        switch kind {
        case .connectionFailed, .timedOut: true
        case .server(let code): code.isRetryable
        default: false
        }
    }

    public var description: String {
        message + (underlying.map { " (last failure: \($0))" } ?? "")
    }
}
