public import RaffleAdmission
public import RaffleHTTP2
public import RaffleWire

/// Everything a raffled server is configured with. Every field has a documented default; the
/// `raffled` CLI maps its flags onto this struct and nothing deeper reads the environment.
public struct ServerConfiguration: Sendable, Hashable {
    /// Address to listen on. Default `127.0.0.1`.
    public var host = "127.0.0.1"
    /// Main port: HTTP/2 and HTTP/1.1 (over TLS when `tls` is set); 0 picks a free one. Default 8080.
    public var port = 8080
    /// Raw-TCP port (PROTOCOL.md §12): nil = the HTTP/2 port + 1 (or a free one when `port` is 0);
    /// -1 turns raw TCP off. Default nil.
    public var tcpPort: Int?
    /// UDP port (PROTOCOL.md §13): nil = the HTTP/2 port + 2 (or a free one when `port` is 0); -1
    /// turns UDP off. Default nil.
    public var udpPort: Int?
    /// Largest UDP request accepted, bytes; larger ones get `FRAME_TOO_LARGE`. Default 1,200 (never
    /// fragmented on the Internet's common paths).
    public var udpMaxDatagramBytes = 1_200
    /// Event loops (threads); default one per core.
    public var eventLoops = System.coreCount
    /// Frame limits on the entry path. Default `FrameLimits.default` (65,552 B, 4,096 entries).
    public var frameLimits = FrameLimits.default
    /// Memory preallocated at start-up for request bodies that arrive in pieces, shared by the
    /// loops. When it is used up, new batches are throttled instead of growing memory. Default 64 MiB.
    public var ingestBufferBytes = 64 << 20
    /// Retry-after (ms) sent when the ingest buffers are exhausted. Default 50.
    public var busyRetryAfterMilliseconds: UInt32 = 50
    /// Reply bytes a stream may hold waiting for durability before the server stops reading its
    /// body (flow control). Default 256 KiB.
    public var maxPendingReplyBytesPerStream = 256 << 10
    /// HTTP/2 settings advertised. Defaults: 256 concurrent streams, 1 MiB stream window, 16 MiB
    /// connection window, 16 KiB header list.
    public var http2 = HTTP2Session.Settings()
    /// Protections nghttp2 enforces. Defaults in `HTTP2Session.Options`.
    public var http2Options = HTTP2Session.Options()
    /// Most header fields in one request. Default 64.
    public var maxHeaderFields = 64
    /// "Glitches" (empty DATA/HEADERS frames, invalid frames, streams reset by header limits) a
    /// connection may make in a burst, and per second after, before GOAWAY(ENHANCE_YOUR_CALM).
    /// Defaults 1,000 and 33/s, as nghttp2's later releases do.
    public var glitchBurst = 1_000
    public var glitchesPerSecond = 33
    /// Most open TCP connections from one IPv4 address or IPv6 /64 (HTTP and raw TCP together); more
    /// are closed as they arrive. 0: no cap (a load balancer in front). Default 512.
    public var maxConnectionsPerAddress = 512
    /// Most new TCP connections per second from one IPv4 address or IPv6 /64 (a burst of twice that);
    /// more are closed as they arrive. 0: no limit (a load balancer in front). Default 100.
    public var maxNewConnectionsPerAddressPerSecond = 100
    /// Close a connection with no open stream after this long. Default 60 s.
    public var idleTimeoutMilliseconds: Int64 = 60_000
    /// Close a connection that has not completed the HTTP/2 preface after this long. Default 10 s.
    public var handshakeTimeoutMilliseconds: Int64 = 10_000
    /// Most response bytes queued on one connection (unsent) before the server stops reading from
    /// it. Default 4 MiB.
    public var maxUnsentBytesPerConnection = 4 << 20
    /// Throttling: global and per-client token buckets (GCRA), the anonymous class, the waiting
    /// room and log backpressure. Defaults in `AdmissionConfiguration`.
    public var admission = AdmissionConfiguration()
    /// Largest JSON body accepted by the admin API. Default 64 KiB.
    public var maxAdminBodyBytes = 64 << 10
    /// TLS for the main port and raw TCP: certificate chain and key (PEM). nil (the default):
    /// plaintext — HTTP/2 with prior knowledge and HTTP/1.1 on the main port, told apart by the
    /// HTTP/2 preface. With TLS, ALPN chooses `h2` or `http/1.1`; plaintext is refused there.
    public var tls: TLSFiles?
    /// Keys that unlock the admin API. Default none: admin calls are refused (403) until one is
    /// configured (the `raffled` executable makes one at first start).
    public var adminKeys = AdminKeys()
    /// Serve the admin API and `/metrics` on a separate plaintext listener at this host and port
    /// (0 picks a free one) instead of the main port. Default nil: on the main port.
    public var adminHost: String?
    public var adminPort: Int?
    /// HTTP/1.1: close a connection whose request head (request line and header fields) has not
    /// arrived whole this long after its first byte (slowloris). Default 10 s.
    public var requestHeadTimeoutMilliseconds: Int64 = 10_000
    /// Set SO_REUSEPORT on the TCP listeners (main, raw TCP, admin) so several raffled processes on
    /// one host share the ports and the kernel spreads connections among them. Only for nodes on a
    /// shared ledger (PostgreSQL): processes with local ledgers would each keep their own entries.
    /// (UDP sockets always use it: one per event loop.) Default false.
    public var reusePort = false

    /// The defaults.
    public init() {}

    /// The raw-TCP port to bind (nil: off).
    var resolvedTCPPort: Int? { Self.resolve(tcpPort, offset: 1, base: port) }
    /// The UDP port to bind (nil: off).
    var resolvedUDPPort: Int? { Self.resolve(udpPort, offset: 2, base: port) }

    private static func resolve(_ explicit: Int?, offset: Int, base: Int) -> Int? {
        if let explicit { return explicit < 0 ? nil : explicit }
        return base == 0 ? 0 : base + offset
    }

    /// Bytes of one ingest buffer: the largest frame plus one HTTP/2 DATA frame.
    var ingestSlotBytes: Int {
        let raw = Wire.headerSize + frameLimits.maxPayloadBytes + 16_384
        return (raw + 4_095) & ~4_095
    }
}

#if canImport(Glibc)
import Glibc
#endif
import NIOCore
