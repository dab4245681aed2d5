// Fuzz target: the HTTP/1.1 request path in memory (NIOHTTP1's parser, the exchange handler,
// the entry path, the admin API), on a connection that starts as HTTP/1.1 (ConnectionFuzz).
import RaffleFuzzConnection
import RaffleFuzzSupport

// nonisolated(unsafe): libFuzzer (and the replayer) call the target on one thread only, one input at a
// time, and the driver is made before the first call.
nonisolated(unsafe) let driver = ConnectionFuzz(.http1)
FuzzMain.run { driver.fuzz($0) }
