// Fuzz target: start-up replay of a log segment holding arbitrary bytes, in memory (the record walk,
// the CRC check, torn-tail detection, the ledger applying raffle, entry and close records, the draw
// of closed raffles). Every input must replay or be refused with a typed error (`LogCorruption`, a
// replay error) — never a trap.
import RaffleFuzzSupport
import RaffleLedger

func fuzz(_ bytes: UnsafeRawBufferPointer) {
    if let valid = try? LocalLedger.replay(segment: bytes) {
        precondition(valid >= 0 && valid <= bytes.count, "the valid prefix lies within the segment")
    }
}

FuzzMain.run(fuzz)
