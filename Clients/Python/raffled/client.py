"""The raffled client: batching, retries kind to a struggling server, bulk submission, admin calls."""
from __future__ import annotations

import asyncio
import itertools
import json
import random
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import draw
from .errors import RaffleError
from .transports import Transport
from .wire import BatchAck, Entry, ErrorReply, Pong, Throttled, WireError, decode_all, encode_batch, encode_ping


@dataclass
class Settings:
    """Every setting, with the Swift client's defaults (Clients/README.md)."""
    api_key: Optional[str] = None        # sent as `authorization: Bearer …` with entries
    admin_key: Optional[str] = None      # sent with admin calls (create, close, draw, export, stats)
    deadline: float = 30.0               # seconds one call may take, retries included
    attempt_timeout: float = 10.0        # seconds one attempt may take
    backoff_base: float = 0.05           # full-jitter backoff: uniform(0, min(cap, base · 2^n))
    backoff_cap: float = 10.0
    retry_ratio: float = 0.2             # retries ≤ 20 % of requests …
    min_retries_per_second: float = 10.0  # … plus 10 a second
    retry_after_jitter_share: float = 0.1  # jitter on top of a server's retry-after: ≤ 10 %, ≤ 100 ms
    max_retry_after_jitter: float = 0.1
    max_batch_entries: int = 1000        # `enter` coalescing: up to this many …
    linger: float = 0.005                # … or this long after the first


class RetryBudget:
    """Each first attempt deposits `ratio` of a token, each retry withdraws one; `minimum_per_second`
    retries a second are always allowed."""

    def __init__(self, ratio: float, minimum_per_second: float, capacity: float = 1000.0) -> None:
        self.ratio, self.minimum, self.capacity = ratio, minimum_per_second, capacity
        self.tokens = 0.0
        self.floor = minimum_per_second
        self.last: Optional[float] = None

    def deposit(self) -> None:
        self.tokens = min(self.capacity, self.tokens + self.ratio)

    def withdraw(self, now: float) -> bool:
        if self.last is not None:
            self.floor = min(self.minimum, self.floor + (now - self.last) * self.minimum)
        self.last = now
        if self.tokens >= 1 - 1e-9:
            self.tokens = max(self.tokens - 1, 0.0)
            return True
        if self.floor >= 1:
            self.floor -= 1
            return True
        return False


Attempt = Union[Tuple[str, Any], Tuple[str, Throttled], Tuple[str, RaffleError]]


class RaffleClient:
    """Submit entries with retries, coalesce `enter` calls, submit in bulk, call the admin API.

    ``async with RaffleClient(HTTP2Transport("raffle.example.com", 443, tls_context())) as client:``
    """

    def __init__(self, transport: Transport, settings: Optional[Settings] = None, rng: Optional[random.Random] = None) -> None:
        self.transport = transport
        self.settings = settings or Settings()
        self.budget = RetryBudget(self.settings.retry_ratio, self.settings.min_retries_per_second)
        self.rng = rng or random.Random()
        self.attempts = 0
        self.throttled = 0
        self._ids = itertools.count(1)
        self._collecting: Dict[int, List[Tuple[Entry, "asyncio.Future[str]"]]] = {}
        self._flushes: List["asyncio.Task[None]"] = []

    async def __aenter__(self) -> "RaffleClient":
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.shutdown()

    # ---- entries ----

    async def submit(self, entries: Sequence[Entry], raffle: int) -> List[str]:
        """One batch; one outcome name per entry (``accepted``, ``already_entered``, …), in order.
        Throttled batches go back at the server's retry-after; lost connections, timeouts and 0x02xx
        errors are retried with backoff within the deadline and the retry budget."""
        if not entries:
            raise RaffleError("invalid_request", "a batch needs at least one entry")
        frame = encode_batch(next(self._ids), raffle, entries, checksum=self.transport.requires_checksum)

        def interpret(body: Any) -> Tuple[str, Any]:
            if isinstance(body, BatchAck):
                if len(body.outcomes) != len(entries):
                    return ("failed", RaffleError("invalid_response", "ack outcomes do not match the batch"))
                return ("done", list(body.outcomes))
            return ("unexpected", body)

        result: List[str] = await self._with_retries(frame, interpret)
        return result

    async def ping(self, value: int = 0) -> int:
        """A round trip; returns the echoed value."""
        frame = encode_ping(next(self._ids), value, checksum=self.transport.requires_checksum)
        pong: int = await self._with_retries(frame, lambda b: ("done", b.value) if isinstance(b, Pong) else ("unexpected", b))
        return pong

    async def enter(self, user_id: int, raffle: int, tickets: int = 1) -> str:
        """Enters one user; concurrent calls are coalesced into batches (`max_batch_entries`, `linger`)."""
        future: "asyncio.Future[str]" = asyncio.get_running_loop().create_future()
        waiting = self._collecting.setdefault(raffle, [])
        waiting.append((Entry(user_id, tickets), future))
        if len(waiting) >= self.settings.max_batch_entries:
            self._flush(raffle)
        elif len(waiting) == 1:
            asyncio.get_running_loop().call_later(self.settings.linger, self._flush, raffle)
        return await future

    def _flush(self, raffle: int) -> None:
        waiting = self._collecting.pop(raffle, [])
        if waiting:
            self._flushes.append(asyncio.ensure_future(self._send_collected(raffle, waiting)))

    async def _send_collected(self, raffle: int, waiting: List[Tuple[Entry, "asyncio.Future[str]"]]) -> None:
        try:
            outcomes = await self.submit([e for e, _ in waiting], raffle)
            for (_, future), outcome in zip(waiting, outcomes):
                future.set_result(outcome)
        except BaseException as error:  # hand every caller the failure, cancellation included
            for _, future in waiting:
                if not future.done():
                    future.set_exception(error)

    async def bulk(self, raffle: int, batches: Iterable[Sequence[Entry]], window: int = 8,
                   on_ack: Optional[Callable[[Sequence[Entry], List[str]], Awaitable[None]]] = None) -> Dict[str, int]:
        """Submits every batch with `window` in flight (multiplexed on one HTTP/2 connection, or
        pipelined on one TCP connection); a batch whose connection dropped is sent again on the next
        one, and entries that had been stored come back ``already_entered``. Returns counts by outcome."""
        source = iter(batches)
        counts: Dict[str, int] = {}

        async def sender() -> None:
            for batch in source:
                outcomes = await self.submit(batch, raffle)
                for o in outcomes:
                    counts[o] = counts.get(o, 0) + 1
                if on_ack is not None:
                    await on_ack(batch, outcomes)

        await asyncio.gather(*(sender() for _ in range(max(window, 1))))
        return counts

    async def _with_retries(self, frame: bytes, interpret: Callable[[Any], Tuple[str, Any]]) -> Any:
        s = self.settings
        loop = asyncio.get_running_loop()
        deadline = loop.time() + s.deadline
        self.budget.deposit()
        spends_budget = False
        last: Optional[RaffleError] = None
        attempt = 0
        while True:
            if spends_budget and not self.budget.withdraw(time.monotonic()):
                raise RaffleError("retry_budget_exhausted", "retry budget exhausted: the server is failing; not retrying",
                                  underlying=last)
            self.attempts += 1
            outcome = await self._attempt(frame, interpret, min(s.attempt_timeout, max(deadline - loop.time(), 0.001)))
            kind, value = outcome
            if kind == "done":
                return value
            if kind == "throttled":
                assert isinstance(value, Throttled)
                self.throttled += 1
                floor = value.retry_after_ms / 1000
                delay = floor + self.rng.uniform(0, min(floor * s.retry_after_jitter_share, s.max_retry_after_jitter))
                last = RaffleError("server", f"throttled ({value.reason}) for {value.retry_after_ms} ms", retryable=True)
                spends_budget = False
            else:
                assert isinstance(value, RaffleError)
                if not value.retryable:
                    raise value
                attempt += 1
                delay = self.rng.uniform(0, min(s.backoff_cap, s.backoff_base * (2 ** min(attempt, 30))))
                last = value
                spends_budget = True
            if loop.time() + delay > deadline:
                raise RaffleError("deadline_exceeded", f"gave up after {s.deadline} s: the next retry would pass the deadline",
                                  underlying=last)
            await asyncio.sleep(delay)  # a cancelled task gets CancelledError here

    async def _attempt(self, frame: bytes, interpret: Callable[[Any], Tuple[str, Any]], timeout: float) -> Tuple[str, Any]:
        authorization = f"Bearer {self.settings.api_key}" if self.settings.api_key else None
        try:
            _, body = await self.transport.send(frame, authorization, timeout)
            replies = decode_all(body)
        except RaffleError as error:
            return ("failed", error)
        except WireError as error:
            return ("failed", RaffleError("invalid_response", f"reply breaks the protocol: {error}"))
        if not replies:
            return ("failed", RaffleError("invalid_response", "no reply frame"))
        body0 = replies[0].body
        if isinstance(body0, Throttled):
            return ("throttled", body0)
        if isinstance(body0, ErrorReply):
            return ("failed", RaffleError("server", f"{body0.name}: {body0.message}", code=body0.name, retryable=body0.retryable))
        kind, value = interpret(body0)
        if kind == "unexpected":
            return ("failed", RaffleError("invalid_response", f"unexpected reply {value!r}"))
        return (kind, value)

    async def shutdown(self) -> None:
        """Sends what `enter` is still collecting, waits for the answers, closes the transport."""
        for raffle in list(self._collecting):
            self._flush(raffle)
        if self._flushes:
            await asyncio.gather(*self._flushes, return_exceptions=True)
        await self.transport.close()

    # ---- admin and reads (JSON; 64-bit ids are decimal strings) ----

    async def _json(self, method: str, path: str, body: Optional[Dict[str, Any]] = None, expect: int = 200) -> Any:
        authorization = f"Bearer {self.settings.admin_key}" if self.settings.admin_key else None
        data = json.dumps(body).encode() if body is not None else None
        status, reply = await self.transport.admin(method, path, data, authorization)
        if status != expect:
            try:
                message = json.loads(reply).get("error", reply.decode(errors="replace"))
            except ValueError:
                message = reply.decode(errors="replace")
            raise RaffleError("http", f"HTTP {status}: {message}", status=status)
        return json.loads(reply) if reply[:1] in (b"{", b"[") else reply.decode()

    async def create_raffle(self, title: str, duration_seconds: int, winners: int = 1, max_tickets_per_user: int = 1,
                            expected_entries: Optional[int] = None) -> Dict[str, Any]:
        """Creates a raffle; ``expected_entries`` lets the server size its index once (a hint, not a limit)."""
        body: Dict[str, Any] = {
            "title": title, "durationSeconds": duration_seconds, "winners": winners, "maxTicketsPerUser": max_tickets_per_user}
        if expected_entries is not None:
            body["expectedEntries"] = expected_entries
        info: Dict[str, Any] = await self._json("POST", "/v1/raffles", body, 201)
        return info

    async def raffle(self, raffle: int) -> Dict[str, Any]:
        info: Dict[str, Any] = await self._json("GET", f"/v1/raffles/{raffle}")
        return info

    async def close(self, raffle: int) -> Dict[str, Any]:
        """Closes the raffle now, reveals the seed and draws (idempotent)."""
        info: Dict[str, Any] = await self._json("POST", f"/v1/raffles/{raffle}/close")
        return info

    async def winners(self, raffle: int) -> Dict[str, Any]:
        result: Dict[str, Any] = await self._json("GET", f"/v1/raffles/{raffle}/winners")
        return result

    async def export(self, raffle: int, fmt: str = "csv") -> str:
        text: str = await self._json("GET", f"/v1/raffles/{raffle}/export?format={fmt}")
        return text

    async def verify(self, raffle: int) -> draw.Verification:
        """Fetches the export and the published draw and recomputes it (DRAW.md)."""
        info = await self.raffle(raffle)
        published = await self.winners(raffle)
        return draw.verify(await self.export(raffle), published["seed"], int(info["spec"]["winners"]),
                           commitment=info["seedCommitment"], published_hash=published["entryListHash"],
                           published_winners=[int(w) for w in published["winners"]])
