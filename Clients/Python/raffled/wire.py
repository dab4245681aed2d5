"""The raffled wire protocol, version 1 (Protocol/PROTOCOL.md): frames, CRC32C, outcomes, errors."""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple, Union

MAGIC = b"RF"
VERSION = 1
HEADER_SIZE = 24
CONTENT_TYPE = "application/vnd.raffled.frames"
ENTRIES_PATH = "/v1/entries"

ENTRY_BATCH, BATCH_ACK, THROTTLED, ERROR, PING, PONG = 1, 2, 3, 4, 5, 6
CHECKSUM = 0x0001  # flag bit 0

OUTCOMES = ("accepted", "already_entered", "raffle_not_open", "raffle_closed",
            "invalid_user_id", "invalid_tickets", "invalid_reserved")
REASONS = {1: "rate_limited", 2: "server_busy", 3: "waiting_room"}
ERROR_CODES = {
    0x0001: "BAD_MAGIC", 0x0002: "UNSUPPORTED_VERSION", 0x0003: "NONZERO_RESERVED",
    0x0004: "UNKNOWN_FRAME_TYPE", 0x0005: "UNKNOWN_FLAGS", 0x0006: "FRAME_TOO_LARGE",
    0x0007: "CHECKSUM_MISMATCH", 0x0008: "CHECKSUM_REQUIRED", 0x0009: "MALFORMED_PAYLOAD",
    0x000A: "EMPTY_BATCH", 0x000B: "TOO_MANY_ENTRIES", 0x000C: "UNEXPECTED_FRAME_TYPE",
    0x000D: "TRUNCATED_FRAME", 0x0101: "UNKNOWN_RAFFLE", 0x0102: "BATCH_EXCEEDS_BURST",
    0x0103: "BAD_CONTENT_TYPE", 0x0201: "UNAVAILABLE", 0x0202: "SHUTTING_DOWN", 0x0203: "INTERNAL",
}
MAX_PAYLOAD = 65_552
MAX_MESSAGE = 1024

# CRC32C (Castagnoli, reflected 0x82F63B78, init and final XOR 0xFFFFFFFF), PROTOCOL.md §9.
_TABLE: List[int] = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _TABLE.append(_c)


def crc32c(data: bytes, crc: int = 0) -> int:
    """CRC32C of `data`, continuing from `crc`."""
    c = crc ^ 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


class WireError(Exception):
    """A frame that breaks the protocol: `code` is its error name (PROTOCOL.md §7)."""

    def __init__(self, code: str, message: str, request_id: int = 0, fatal: bool = False) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.fatal = fatal


@dataclass(frozen=True)
class Entry:
    """One entry: a user (never 0) and how many tickets (at least 1)."""
    user_id: int
    tickets: int = 1


@dataclass(frozen=True)
class BatchAck:
    raffle_id: int
    outcomes: Tuple[str, ...]


@dataclass(frozen=True)
class Throttled:
    retry_after_ms: int
    reason: str


@dataclass(frozen=True)
class ErrorReply:
    code: int
    message: str

    @property
    def name(self) -> str:
        return ERROR_CODES.get(self.code, f"0x{self.code:04X}")

    @property
    def retryable(self) -> bool:
        """Only 0x02xx errors are retryable (PROTOCOL.md §7)."""
        return self.code >> 8 == 0x02


@dataclass(frozen=True)
class Pong:
    value: int


Body = Union[BatchAck, Throttled, ErrorReply, Pong]


@dataclass(frozen=True)
class Frame:
    """A decoded reply frame."""
    request_id: int
    flags: int
    body: Body
    length: int = field(default=0, compare=False)


def _frame(ftype: int, payload: bytes, request_id: int, checksum: bool) -> bytes:
    flags = CHECKSUM if checksum else 0
    head = MAGIC + struct.pack("<BBHHIQ", VERSION, ftype, flags, 0, len(payload), request_id)
    crc = crc32c(payload, crc32c(head)) if checksum else 0
    return head + struct.pack("<I", crc) + payload


def encode_batch(request_id: int, raffle_id: int, entries: Sequence[Entry], checksum: bool = False) -> bytes:
    """An entry_batch frame (PROTOCOL.md §4.1)."""
    payload = struct.pack("<QII", raffle_id, len(entries), 0)
    payload += b"".join(struct.pack("<QII", e.user_id, e.tickets, 0) for e in entries)
    return _frame(ENTRY_BATCH, payload, request_id, checksum)


def encode_ping(request_id: int, value: int, checksum: bool = False) -> bytes:
    """A ping frame (PROTOCOL.md §4.5)."""
    return _frame(PING, struct.pack("<Q", value), request_id, checksum)


def decode_reply(data: bytes, end_of_input: bool = False) -> Optional[Frame]:
    """Decodes the reply frame at the start of `data`; None when more bytes are needed.
    Raises `WireError` for a frame that breaks PROTOCOL.md §6."""
    if len(data) < HEADER_SIZE:
        if end_of_input and data:
            raise WireError("TRUNCATED_FRAME", "input ended inside a header", fatal=True)
        return None
    if data[0:2] != MAGIC:
        raise WireError("BAD_MAGIC", "not RF", fatal=True)
    version, ftype, flags, reserved, length, request_id, crc = struct.unpack_from("<BBHHIQI", data, 2)
    if version != VERSION:
        raise WireError("UNSUPPORTED_VERSION", f"version {version}", fatal=True)
    if length > MAX_PAYLOAD:
        raise WireError("FRAME_TOO_LARGE", f"payload of {length} bytes", request_id, fatal=True)
    if len(data) < HEADER_SIZE + length:
        if end_of_input:
            raise WireError("TRUNCATED_FRAME", "input ended inside a payload", request_id, fatal=True)
        return None
    payload = bytes(data[HEADER_SIZE:HEADER_SIZE + length])
    if flags & CHECKSUM:
        if crc32c(payload, crc32c(bytes(data[:20]))) != crc:
            raise WireError("CHECKSUM_MISMATCH", "CRC32C does not match", request_id, fatal=True)
    elif crc != 0 or reserved != 0:
        raise WireError("NONZERO_RESERVED", "reserved field or checksum without its flag", request_id, fatal=True)
    if flags & 0x00FE:
        raise WireError("UNKNOWN_FLAGS", f"flags 0x{flags:04X}", request_id)
    body: Body
    if ftype == BATCH_ACK:
        if length < 16:
            raise WireError("MALFORMED_PAYLOAD", "ack shorter than 16 bytes", request_id)
        raffle_id, count, accepted = struct.unpack_from("<QII", payload)
        codes = payload[16:]
        if len(codes) != count or sum(1 for c in codes if c == 0) != accepted:
            raise WireError("MALFORMED_PAYLOAD", "ack counts do not match its outcomes", request_id)
        body = BatchAck(raffle_id, tuple(OUTCOMES[c] if c < len(OUTCOMES) else f"outcome_{c}" for c in codes))
    elif ftype == THROTTLED:
        if length != 8:
            raise WireError("MALFORMED_PAYLOAD", "throttled payload is 8 bytes", request_id)
        ms, reason, reserved_field = struct.unpack_from("<IHH", payload)
        if reserved_field:
            raise WireError("NONZERO_RESERVED", "throttled reserved field", request_id)
        body = Throttled(ms, REASONS.get(reason, "rate_limited"))
    elif ftype == ERROR:
        if length < 4 or length - 4 > MAX_MESSAGE:
            raise WireError("MALFORMED_PAYLOAD", "error payload size", request_id)
        code, reserved_field = struct.unpack_from("<HH", payload)
        if reserved_field:
            raise WireError("NONZERO_RESERVED", "error reserved field", request_id)
        body = ErrorReply(code, payload[4:].decode("utf-8", "replace"))
    elif ftype == PONG:
        if length != 8:
            raise WireError("MALFORMED_PAYLOAD", "pong payload is 8 bytes", request_id)
        body = Pong(struct.unpack_from("<Q", payload)[0])
    elif ftype in (ENTRY_BATCH, PING):
        raise WireError("UNEXPECTED_FRAME_TYPE", f"a client never receives type {ftype}", request_id)
    else:
        raise WireError("UNKNOWN_FRAME_TYPE", f"type {ftype}", request_id)
    return Frame(request_id, flags, body, HEADER_SIZE + length)


def decode_all(data: bytes) -> List[Frame]:
    """Every frame in `data` (which must end at a frame boundary)."""
    frames: List[Frame] = []
    view = memoryview(data)
    while view:
        frame = decode_reply(bytes(view), end_of_input=True)
        assert frame is not None
        frames.append(frame)
        view = view[frame.length:]
    return frames
