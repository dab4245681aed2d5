// Fuzz target: an HTTP/2 server connection's byte input, in memory (nghttp2, the frame rules, the
// stream table, the entry path, the admin API), after the client preface (ConnectionFuzz).
import RaffleFuzzConnection
import RaffleFuzzSupport

// nonisolated(unsafe): libFuzzer (and the replayer) call the target on one thread only, one input at a
// time, and the driver is made before the first call.
nonisolated(unsafe) let driver = ConnectionFuzz(.http2)
FuzzMain.run { driver.fuzz($0) }
