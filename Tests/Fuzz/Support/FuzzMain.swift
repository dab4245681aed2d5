import Foundation

/// A fuzz target's entry point: `FuzzMain.run(target)` as its only top-level statement.
///
/// Built with `-sanitize=fuzzer -DFUZZING` (scripts/fuzz) it hands the command line to libFuzzer
/// (`LLVMFuzzerRunDriver`), which then calls `target` with each input it makes; built plainly it
/// replays the files named on the command line (`CorpusReplay`).
public enum FuzzMain {
    public static func run(_ target: @escaping (UnsafeRawBufferPointer) -> Void) -> Never {
        #if FUZZING
        current = target
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(LLVMFuzzerRunDriver(&argc, &argv) { data, size in
            FuzzMain.current?(UnsafeRawBufferPointer(start: data, count: size))
            return 0
        })
        #else
        CorpusReplay.main(target)
        #endif
    }

    #if FUZZING
    /// nonisolated(unsafe): set once before libFuzzer starts, read only on libFuzzer's one thread.
    nonisolated(unsafe) static var current: ((UnsafeRawBufferPointer) -> Void)?
    #endif
}

#if FUZZING
/// libFuzzer's driver for programs with their own `main` (compiler-rt, LLVM 11 and later).
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt
#endif

#if FUZZING
/// libFuzzer's library refers to this symbol even when its driver is given the callback: forward it.
@_cdecl("LLVMFuzzerTestOneInput")
public func LLVMFuzzerTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzMain.current?(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
#endif
