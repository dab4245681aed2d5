"""The verifiable draw (Protocol/DRAW.md), and the offline check of a published one."""
from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass, field
from typing import Iterator, List, Optional, Sequence, Tuple

from .wire import Entry


def canonical(entries: Sequence[Entry]) -> List[Entry]:
    """Entries with at least one ticket, by user id ascending (DRAW.md §2)."""
    return sorted((e for e in entries if e.tickets > 0), key=lambda e: e.user_id)


def entry_list_hash(canonical_entries: Sequence[Entry]) -> bytes:
    """SHA-256 of u64le(user id) ‖ u32le(tickets) for each entry, in order."""
    h = hashlib.sha256()
    for e in canonical_entries:
        h.update(struct.pack("<QI", e.user_id, e.tickets))
    return h.digest()


def random_u64s(seed: bytes, list_hash: bytes) -> Iterator[int]:
    """Block i = SHA-256(seed ‖ H ‖ u64le(i)); four u64le values per block (DRAW.md §3)."""
    i = 0
    while True:
        block = hashlib.sha256(seed + list_hash + struct.pack("<Q", i)).digest()
        i += 1
        for k in range(4):
            yield struct.unpack_from("<Q", block, 8 * k)[0]


def winners(entries: Sequence[Entry], seed: bytes, count: int) -> Tuple[str, List[int]]:
    """The entry-list hash (hex) and the winners in drawn order (DRAW.md §4)."""
    kept = canonical(entries)
    list_hash = entry_list_hash(kept)
    weights = [e.tickets for e in kept]
    total = sum(weights)
    stream = random_u64s(seed, list_hash)
    chosen: List[int] = []
    while len(chosen) < count and total > 0:
        threshold = (1 << 64) % total
        r = next(stream)
        while r < threshold:
            r = next(stream)
        ticket = r % total
        i = 0
        while ticket >= weights[i]:
            ticket -= weights[i]
            i += 1
        chosen.append(kept[i].user_id)
        total -= weights[i]
        weights[i] = 0
    return list_hash.hex(), chosen


def parse_export(text: str) -> List[Entry]:
    """Entries from a CSV (`user_id,tickets` after a header) or NDJSON export (DRAW.md §6).
    Raises ValueError naming the line that cannot be read."""
    out: List[Entry] = []
    for n, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line == "user_id,tickets":
            continue
        try:
            if line.startswith("{"):
                row = json.loads(line)
                out.append(Entry(int(row["userId"]), int(row["tickets"])))
            else:
                user, tickets = line.split(",")
                out.append(Entry(int(user), int(tickets)))
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"line {n}: not an export line: {line!r}") from error
    return out


@dataclass
class Verification:
    """What an offline check found: `ok` and one line per check."""
    ok: bool
    entry_list_hash: str
    winners: List[int]
    lines: List[str] = field(default_factory=list)


def verify(export: str, seed_hex: str, winner_count: int, commitment: Optional[str] = None,
           published_hash: Optional[str] = None, published_winners: Optional[Sequence[int]] = None) -> Verification:
    """Recomputes a draw from an export and the revealed seed, and compares it with what was published."""
    seed = bytes.fromhex(seed_hex)
    if len(seed) != 32:
        raise ValueError("the seed is 32 bytes (64 hex digits)")
    list_hash, chosen = winners(parse_export(export), seed, winner_count)
    result = Verification(True, list_hash, chosen)

    def check(what: str, good: bool) -> None:
        result.lines.append(f"{what}: {'matches' if good else 'DOES NOT MATCH'}")
        result.ok = result.ok and good

    if commitment is not None:
        check("seed commitment", hashlib.sha256(seed).hexdigest() == commitment.lower())
    if published_hash is not None:
        check("entry-list hash", list_hash == published_hash.lower())
    if published_winners is not None:
        check("winners", list(published_winners) == chosen)
    return result
