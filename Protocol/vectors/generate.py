#!/usr/bin/env python3
"""Writes the golden test vectors of raffled's wire protocol v1 (Protocol/PROTOCOL.md).

This is a second, independent implementation of the frame layout, written from PROTOCOL.md alone
in plain Python (no third-party packages). The Swift tests decode every vector with the Swift
codec and re-encode it, so the two implementations check each other.

    python3 Protocol/vectors/generate.py        # rewrites valid/*.json and invalid/*.json
    python3 Protocol/vectors/generate.py --check # exits 1 if the files on disk differ

Each vector is one JSON file:
  valid/NAME.json    {"description", "direction", "hex", "frame": {...}, ["validation": {...}]}
  invalid/NAME.json  {"description", "direction", "hex", ["decoder": {...}], "error": {...}}
  http/NAME.json     the HTTP mapping: status by first reply, retry-after rounding
  draw/NAME.json     {"description", "seed", "commitment", "entries", "winner_count",
                      "canonical_list_hex", "entry_list_hash", "random_u64", "winners", "export_csv",
                      "export_ndjson"} — the verifiable draw of Protocol/DRAW.md, from its text alone
64-bit integers are written as decimal strings so every JSON parser reads them exactly.
"""
import hashlib
import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# ---- CRC32C (Castagnoli, reflected 0x82F63B78, init/xorout 0xFFFFFFFF) ----
_T = []
for n in range(256):
    c = n
    for _ in range(8):
        c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
    _T.append(c)


def crc32c(data, crc=0):
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283

TYPES = {"entry_batch": 1, "batch_ack": 2, "throttled": 3, "error": 4, "ping": 5, "pong": 6}
OUTCOMES = ["accepted", "already_entered", "raffle_not_open", "raffle_closed",
            "invalid_user_id", "invalid_tickets", "invalid_reserved"]
REASONS = {1: "rate_limited", 2: "server_busy", 3: "waiting_room"}
ERRORS = {
    "BAD_MAGIC": 0x0001, "UNSUPPORTED_VERSION": 0x0002, "NONZERO_RESERVED": 0x0003,
    "UNKNOWN_FRAME_TYPE": 0x0004, "UNKNOWN_FLAGS": 0x0005, "FRAME_TOO_LARGE": 0x0006,
    "CHECKSUM_MISMATCH": 0x0007, "CHECKSUM_REQUIRED": 0x0008, "MALFORMED_PAYLOAD": 0x0009,
    "EMPTY_BATCH": 0x000A, "TOO_MANY_ENTRIES": 0x000B, "UNEXPECTED_FRAME_TYPE": 0x000C,
    "TRUNCATED_FRAME": 0x000D, "UNKNOWN_RAFFLE": 0x0101, "BATCH_EXCEEDS_BURST": 0x0102,
    "BAD_CONTENT_TYPE": 0x0103, "UNAVAILABLE": 0x0201, "SHUTTING_DOWN": 0x0202, "INTERNAL": 0x0203,
}
CHECKSUM = 0x0001


def header(ftype, flags, payload_len, request_id, reserved=0, magic=b"RF", version=1):
    return magic + struct.pack("<BBHHIQ", version, ftype, flags, reserved, payload_len, request_id)


def frame(ftype, payload, request_id, flags=0, **kw):
    h = header(ftype, flags, len(payload), request_id, **kw)
    crc = crc32c(payload, crc32c(h)) if flags & CHECKSUM else 0
    return h + struct.pack("<I", crc) + payload


def batch_payload(raffle_id, entries, count=None, reserved=0):
    p = struct.pack("<QII", raffle_id, len(entries) if count is None else count, reserved)
    for user, tickets, res in entries:
        p += struct.pack("<QII", user, tickets, res)
    return p


def ack_payload(raffle_id, outcomes, accepted=None):
    codes = bytes(OUTCOMES.index(o) if o in OUTCOMES else int(o.split("_")[1]) for o in outcomes)
    acc = sum(1 for c in codes if c == 0) if accepted is None else accepted
    return struct.pack("<QII", raffle_id, len(codes), acc) + codes


def flag_names(flags):
    names = []
    if flags & CHECKSUM:
        names.append("checksum")
    for bit in range(1, 16):
        if flags & (1 << bit):
            names.append("bit%d" % bit)
    return names


def meaning(ftype, body, request_id, flags):
    return {"type": ftype, "request_id": str(request_id), "flags": flag_names(flags), ftype: body}


VALID = []
INVALID = []


def valid(name, description, ftype, body, payload, request_id, flags=0, direction="client_to_server",
          validation=None):
    v = {"description": description, "direction": direction,
         "hex": frame(TYPES[ftype], payload, request_id, flags).hex(),
         "frame": meaning(ftype, body, request_id, flags)}
    if validation:
        v["validation"] = validation
    VALID.append((name, v))


def invalid(name, description, data, code, request_id=0, fatal=False, direction="client_to_server",
            decoder=None, end_of_input=False):
    v = {"description": description, "direction": direction, "hex": data.hex()}
    if decoder or end_of_input:
        d = dict(decoder or {})
        if end_of_input:
            d["end_of_input"] = True
        v["decoder"] = d
    v["error"] = {"code": code, "value": ERRORS[code], "request_id": str(request_id),
                  "connection_level": fatal}
    INVALID.append((name, v))


def entries_json(entries):
    return [{"user_id": str(u), "tickets": t, "reserved": r} for u, t, r in entries]


# ---------------------------------------------------------------- valid frames
e1 = [(1001, 1, 0)]
valid("entry-batch-single", "one entry, no checksum: the smallest useful request", "entry_batch",
      {"raffle_id": "7", "entries": entries_json(e1)}, batch_payload(7, e1), 1)

e3 = [(42, 1, 0), (43, 2, 0), (44, 5, 0)]
valid("entry-batch-three-checksummed", "three entries with the CRC32C checksum flag (as UDP requires)",
      "entry_batch", {"raffle_id": "7", "entries": entries_json(e3)}, batch_payload(7, e3),
      0x0102030405060708, CHECKSUM)

emax = [(2**64 - 1, 2**32 - 1, 0), (1, 1, 0)]
valid("entry-batch-extremes", "largest ids and ticket count the layout holds; validated against "
      "max 10 tickets the first entry is invalid_tickets", "entry_batch",
      {"raffle_id": str(2**64 - 1), "entries": entries_json(emax)}, batch_payload(2**64 - 1, emax),
      2**64 - 1, validation={"max_tickets_per_entry": 10, "outcomes": ["invalid_tickets", "accepted"]})

ebad = [(0, 1, 0), (5, 0, 0), (6, 11, 0), (7, 1, 9), (8, 10, 0), (0, 0, 1)]
valid("entry-batch-invalid-entries", "a well-formed batch whose entries fail field validation one by "
      "one (per-entry outcomes, not a frame error); checks run user id, tickets, reserved",
      "entry_batch", {"raffle_id": "3", "entries": entries_json(ebad)}, batch_payload(3, ebad), 77,
      validation={"max_tickets_per_entry": 10,
                  "outcomes": ["invalid_user_id", "invalid_tickets", "invalid_tickets",
                               "invalid_reserved", "accepted", "invalid_user_id"]})

e_adv = [(9, 1, 0)]
valid("entry-batch-advisory-flag", "advisory flag bit 8 set: receivers ignore unknown advisory bits",
      "entry_batch", {"raffle_id": "7", "entries": entries_json(e_adv)}, batch_payload(7, e_adv), 5,
      flags=0x0100)

outs = ["accepted", "already_entered", "raffle_not_open", "raffle_closed", "invalid_user_id",
        "invalid_tickets", "invalid_reserved", "accepted"]
valid("batch-ack-every-outcome", "one outcome of every defined kind", "batch_ack",
      {"raffle_id": "7", "accepted": 2, "outcomes": outs}, ack_payload(7, outs), 0x0102030405060708,
      CHECKSUM, direction="server_to_client")

valid("batch-ack-single-accepted", "the answer to entry-batch-single", "batch_ack",
      {"raffle_id": "7", "accepted": 1, "outcomes": ["accepted"]}, ack_payload(7, ["accepted"]), 1,
      direction="server_to_client")

unk = ["outcome_200", "accepted"]
valid("batch-ack-unknown-outcome", "an outcome code this version does not define (200): decoded as "
      "itself, treated as not accepted", "batch_ack",
      {"raffle_id": "9", "accepted": 1, "outcomes": unk}, ack_payload(9, unk), 2,
      direction="server_to_client")

valid("throttled-rate-limited", "rate limited: retry after 1,500 ms", "throttled",
      {"retry_after_ms": 1500, "reason": "rate_limited"}, struct.pack("<IHH", 1500, 1, 0), 11,
      direction="server_to_client")
valid("throttled-server-busy-checksummed", "server busy, with checksum (a UDP reply)", "throttled",
      {"retry_after_ms": 37, "reason": "server_busy"}, struct.pack("<IHH", 37, 2, 0), 12, CHECKSUM,
      direction="server_to_client")
valid("throttled-waiting-room", "a waiting-room slot 12,345 ms ahead", "throttled",
      {"retry_after_ms": 12345, "reason": "waiting_room"}, struct.pack("<IHH", 12345, 3, 0), 13,
      direction="server_to_client")

messages = {
    "BAD_MAGIC": "frame starts with 0x4745, expected 0x5246 (\"RF\")",
    "UNSUPPORTED_VERSION": "protocol version 2 is not supported; this receiver speaks version 1",
    "NONZERO_RESERVED": "header reserved field is 0x1, must be 0",
    "UNKNOWN_FRAME_TYPE": "frame type 0x7F is not defined by protocol version 1",
    "UNKNOWN_FLAGS": "unknown critical flag bits 0x8",
    "FRAME_TOO_LARGE": "payload length 4294967295 exceeds this receiver's limit of 65552 bytes",
    "CHECKSUM_MISMATCH": "checksum 0x00000000 does not match the frame's CRC32C 0x1234ABCD",
    "CHECKSUM_REQUIRED": "this transport requires the checksum flag and a CRC32C",
    "MALFORMED_PAYLOAD": "entry batch declares 2 entries (48 payload bytes) but its payload is 40 bytes",
    "EMPTY_BATCH": "entry batch has no entries",
    "TOO_MANY_ENTRIES": "entry batch has 5000 entries; the limit is 4096",
    "UNEXPECTED_FRAME_TYPE": "a server does not accept batch_ack frames",
    "TRUNCATED_FRAME": "input ended after 30 of the frame's 56 bytes",
    "UNKNOWN_RAFFLE": "raffle 99 does not exist",
    "BATCH_EXCEEDS_BURST": "batch of 5000 entries costs more than your burst of 1000",
    "BAD_CONTENT_TYPE": "content-type must be application/vnd.raffled.frames",
    "UNAVAILABLE": "the entry log cannot be written; entries are not being acknowledged",
    "SHUTTING_DOWN": "server is shutting down",
    "INTERNAL": "",
}
for i, (code, msg) in enumerate(messages.items()):
    m = msg.encode()
    valid("error-" + code.lower().replace("_", "-"), "an error frame carrying %s" % code, "error",
          {"code": code, "value": ERRORS[code], "message": msg},
          struct.pack("<HH", ERRORS[code], 0) + m, 100 + i, direction="server_to_client")

utf = "tirage fermé — 抽選は終了しました 🎟"
valid("error-utf8-message", "a message with multi-byte UTF-8", "error",
      {"code": "UNKNOWN_RAFFLE", "value": 0x0101, "message": utf},
      struct.pack("<HH", 0x0101, 0) + utf.encode(), 200, CHECKSUM, direction="server_to_client")
long_msg = "x" * 1024
valid("error-longest-message", "a message of exactly 1,024 bytes, the longest allowed", "error",
      {"code": "INTERNAL", "value": 0x0203, "message": long_msg},
      struct.pack("<HH", 0x0203, 0) + long_msg.encode(), 201, direction="server_to_client")

valid("ping", "a ping with 8 opaque bytes", "ping", {"opaque": "0102030405060708"},
      bytes.fromhex("0102030405060708"), 300)
valid("pong", "the pong answering that ping", "pong", {"opaque": "0102030405060708"},
      bytes.fromhex("0102030405060708"), 300, direction="server_to_client")

# -------------------------------------------------------------- invalid frames
good = frame(1, batch_payload(7, e1), 1)

invalid("bad-magic", "an HTTP/1.1 request line sent to the raw TCP port",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "BAD_MAGIC", fatal=True)
invalid("unsupported-version", "version 2",
        header(1, 0, 32, 5, version=2) + b"\0" * 4 + batch_payload(7, e1), "UNSUPPORTED_VERSION",
        fatal=True)
invalid("nonzero-header-reserved", "header reserved field 1",
        header(1, 0, 32, 6, reserved=1) + b"\0" * 4 + batch_payload(7, e1), "NONZERO_RESERVED",
        request_id=6, fatal=True)
invalid("frame-too-large", "payload length 0xFFFFFFFF: refused from the header alone, before any "
        "payload arrives", header(1, 0, 0xFFFFFFFF, 8) + b"\0" * 4, "FRAME_TOO_LARGE", request_id=8,
        fatal=True)
invalid("frame-too-large-for-datagram", "a 1,000-byte payload against a 1,200-byte datagram limit "
        "shrunk to 512", header(1, 0, 1000, 9) + b"\0" * 4, "FRAME_TOO_LARGE", request_id=9,
        fatal=True, decoder={"max_payload_bytes": 512})
bad_crc = bytearray(frame(1, batch_payload(7, e3), 10, CHECKSUM))
bad_crc[-1] ^= 0x01
invalid("checksum-mismatch", "one payload bit flipped after the checksum was computed", bytes(bad_crc),
        "CHECKSUM_MISMATCH", request_id=10, fatal=True)
invalid("checksum-required", "no checksum flag on a transport that requires one (UDP)", good,
        "CHECKSUM_REQUIRED", request_id=1, decoder={"require_checksum": True})
stray = bytearray(good)
stray[20:24] = b"\x01\x02\x03\x04"
invalid("checksum-without-flag", "checksum field set while the checksum flag is clear", bytes(stray),
        "NONZERO_RESERVED", request_id=1)
invalid("unknown-critical-flag", "critical flag bit 3 set",
        frame(1, batch_payload(7, e1), 12, flags=0x0008), "UNKNOWN_FLAGS", request_id=12)
invalid("unknown-frame-type", "type 0x7F with an 8-byte payload: skipped, stream goes on",
        frame(0x7F, b"\0" * 8, 13), "UNKNOWN_FRAME_TYPE", request_id=13)
invalid("unexpected-ack-to-server", "a batch ack sent to a server",
        frame(2, ack_payload(7, ["accepted"]), 14), "UNEXPECTED_FRAME_TYPE", request_id=14,
        decoder={"receiver": "server"})
invalid("unexpected-batch-to-client", "an entry batch sent to a client", good,
        "UNEXPECTED_FRAME_TYPE", request_id=1, direction="server_to_client",
        decoder={"receiver": "client"})
invalid("batch-length-mismatch", "declares 2 entries but carries 1.5",
        frame(1, batch_payload(7, [(1, 1, 0), (2, 1, 0)], count=2)[:-8], 15), "MALFORMED_PAYLOAD",
        request_id=15)
invalid("batch-shorter-than-prefix", "an entry batch payload of 8 bytes",
        frame(1, struct.pack("<Q", 7), 16), "MALFORMED_PAYLOAD", request_id=16)
invalid("batch-count-overflow", "count 0xFFFFFFFF with one entry's bytes: too many entries is "
        "checked before the length", frame(1, batch_payload(7, e1, count=0xFFFFFFFF), 17),
        "TOO_MANY_ENTRIES", request_id=17)
invalid("empty-batch", "an entry batch with zero entries", frame(1, batch_payload(7, []), 18),
        "EMPTY_BATCH", request_id=18)
invalid("too-many-entries", "3 entries against a limit of 2",
        frame(1, batch_payload(7, e3), 19), "TOO_MANY_ENTRIES", request_id=19,
        decoder={"max_entries_per_batch": 2})
invalid("batch-reserved", "entry batch reserved word 1",
        frame(1, batch_payload(7, e1, reserved=1), 20), "NONZERO_RESERVED", request_id=20)
invalid("ack-accepted-mismatch", "batch ack claims 2 accepted, outcomes hold 1",
        frame(2, ack_payload(7, ["accepted", "already_entered"], accepted=2), 21),
        "MALFORMED_PAYLOAD", request_id=21, direction="server_to_client")
invalid("throttled-short", "a throttled payload of 7 bytes",
        frame(3, struct.pack("<IHB", 5, 1, 0), 22), "MALFORMED_PAYLOAD", request_id=22,
        direction="server_to_client")
invalid("throttled-reserved", "throttled reserved field 1",
        frame(3, struct.pack("<IHH", 5, 1, 1), 23), "NONZERO_RESERVED", request_id=23,
        direction="server_to_client")
invalid("error-message-too-long", "an error message of 1,025 bytes",
        frame(4, struct.pack("<HH", 0x0203, 0) + b"y" * 1025, 24), "MALFORMED_PAYLOAD",
        request_id=24, direction="server_to_client")
invalid("error-reserved", "error frame reserved field 1",
        frame(4, struct.pack("<HH", 0x0203, 1), 25), "NONZERO_RESERVED", request_id=25,
        direction="server_to_client")
invalid("ping-wrong-size", "a ping with 4 bytes", frame(5, b"\0" * 4, 26), "MALFORMED_PAYLOAD",
        request_id=26)
invalid("truncated-header", "input ends 10 bytes into a header", good[:10], "TRUNCATED_FRAME",
        fatal=True, end_of_input=True)
invalid("truncated-payload", "input ends inside the payload", good[:30], "TRUNCATED_FRAME",
        request_id=1, fatal=True, end_of_input=True)


# ---- The verifiable draw (Protocol/DRAW.md) ----

def canonical_list(entries):
    """Entries with at least one ticket, sorted by user id; each 12 bytes: u64le user id, u32le tickets."""
    kept = sorted((u, t) for u, t in entries if t > 0)
    return kept, b"".join(struct.pack("<QI", u, t) for u, t in kept)


def random_u64s(seed, list_hash):
    """Block i = SHA-256(seed || entry-list hash || u64le(i)); four u64le values per block, in order."""
    i = 0
    while True:
        block = hashlib.sha256(seed + list_hash + struct.pack("<Q", i)).digest()
        i += 1
        for k in range(4):
            yield struct.unpack_from("<Q", block, 8 * k)[0]


def draw(entries, seed, count):
    kept, data = canonical_list(entries)
    list_hash = hashlib.sha256(data).digest()
    weights = [t for _, t in kept]
    total = sum(weights)
    stream = random_u64s(seed, list_hash)
    winners = []
    while len(winners) < count and total > 0:
        threshold = (1 << 64) % total        # values below it would bias r mod total: draw again
        r = next(stream)
        while r < threshold:
            r = next(stream)
        ticket = r % total                   # the winning ticket, counted along the list
        i = 0
        while ticket >= weights[i]:
            ticket -= weights[i]
            i += 1
        winners.append(kept[i][0])
        total -= weights[i]
        weights[i] = 0                       # the winner's tickets leave play
    return data, list_hash, winners


DRAWS = []


def draw_vector(name, description, entries, seed, count, shown=8):
    data, list_hash, winners = draw(entries, seed, count)
    stream = random_u64s(seed, list_hash)
    kept, _ = canonical_list(entries)
    DRAWS.append((name, {
        "description": description,
        "seed": seed.hex(),
        "commitment": hashlib.sha256(seed).hexdigest(),
        "entries": [[str(u), t] for u, t in entries],
        "winner_count": count,
        "canonical_list_hex": data.hex() if len(data) <= 12 * 16 else None,
        "entry_list_hash": list_hash.hex(),
        "random_u64": [str(next(stream)) for _ in range(shown)],
        "winners": [str(w) for w in winners],
        "export_csv": "user_id,tickets\n" + "".join("%d,%d\n" % (u, t) for u, t in kept),
        "export_ndjson": "".join('{"userId":"%d","tickets":%d}\n' % (u, t) for u, t in kept),
    }))


draw_vector("single-entry", "one entry with one ticket: it wins", [(42, 1)],
            bytes(range(32)), 1)
draw_vector("weighted-five", "five entries, 1 to 3 tickets, given out of order; three winners",
            [(900, 2), (17, 1), (5000000000, 3), (23, 1), (4, 2)], bytes([7]) * 32, 3)
draw_vector("more-winners-than-entries", "two entries and five winners asked: both win, then the draw stops",
            [(2, 1), (1, 1)], hashlib.sha256(b"raffled").digest(), 5)
draw_vector("large-ids", "user ids near 2^64 (JSON readers must keep all 64 bits: ids are strings here)",
            [((1 << 64) - 1, 1), ((1 << 63) + 12345, 2), ((1 << 53) + 1, 1)], bytes([0xAB]) * 32, 2)
draw_vector("zero-ticket-entries-skipped", "an entry with 0 tickets is not in the list (nor in the hash)",
            [(10, 0), (11, 1), (12, 1)], bytes([1]) * 32, 1)
draw_vector("thousand-entries", "1,000 entries, user ids 7919*k, tickets 1 + k mod 3; ten winners",
            [(7919 * k, 1 + k % 3) for k in range(1, 1001)], hashlib.sha256(b"thousand").digest(), 10)


# ---- The HTTP mapping (PROTOCOL.md §7, §11) ----

HTTP = []
_STATUS = {"FRAME_TOO_LARGE": 413, "BATCH_EXCEEDS_BURST": 413, "UNKNOWN_RAFFLE": 404, "BAD_CONTENT_TYPE": 415,
           "UNAVAILABLE": 503, "SHUTTING_DOWN": 503, "INTERNAL": 500}
HTTP.append(("status-by-first-reply", {
    "description": "the HTTP status of a response whose first reply is this frame (PROTOCOL.md §7, §11)",
    "first_reply": [{"frame": "batch_ack", "status": 200}, {"frame": "pong", "status": 200},
                    {"frame": "throttled", "status": 429}]
                   + [{"frame": "error", "code": name, "value": value, "status": _STATUS.get(name, 400)}
                      for name, value in sorted(ERRORS.items(), key=lambda kv: kv[1])],
}))
HTTP.append(("retry-after-seconds", {
    "description": "retry-after header (whole seconds, rounded up) for a throttled frame's milliseconds",
    "cases": [{"retry_after_ms": ms, "retry_after": str((ms + 999) // 1000)}
              for ms in (0, 1, 999, 1000, 1001, 1500, 59999, 60000, 4294967295)],
}))


def main():
    check = "--check" in sys.argv
    stale = []
    wanted = {}
    for sub, items in (("valid", VALID), ("invalid", INVALID), ("draw", DRAWS), ("http", HTTP)):
        for name, v in items:
            wanted[os.path.join(sub, name + ".json")] = json.dumps(v, indent=2, ensure_ascii=False) + "\n"
    for sub in ("valid", "invalid", "draw", "http"):
        os.makedirs(os.path.join(HERE, sub), exist_ok=True)
        for f in os.listdir(os.path.join(HERE, sub)):
            rel = os.path.join(sub, f)
            if f.endswith(".json") and rel not in wanted:
                stale.append(rel)
                if not check:
                    os.remove(os.path.join(HERE, rel))
    for rel, text in sorted(wanted.items()):
        path = os.path.join(HERE, rel)
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text:
            stale.append(rel)
            if not check:
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    if check and stale:
        print("vectors out of date: " + ", ".join(sorted(stale)))
        sys.exit(1)
    print("%d valid, %d invalid and %d draw vectors%s" % (len(VALID), len(INVALID), len(DRAWS),
          " up to date" if check else " written"))


main()
