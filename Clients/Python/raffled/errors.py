"""Why a call failed."""
from __future__ import annotations

from typing import Optional


class RaffleError(Exception):
    """A failed call: `kind` to branch on, `message` for people, `underlying` the last failure.

    Kinds: ``connection_failed`` and ``timed_out`` (retryable), ``server`` (with `code`, e.g.
    ``UNKNOWN_RAFFLE``; retryable only for 0x02xx codes), ``invalid_response``, ``deadline_exceeded``,
    ``retry_budget_exhausted``, ``invalid_request``, ``http`` (with `status`, for admin calls).
    A cancelled task gets ``asyncio.CancelledError``, never a RaffleError.
    """

    def __init__(self, kind: str, message: str, *, code: Optional[str] = None, status: Optional[int] = None,
                 retryable: bool = False, underlying: Optional[BaseException] = None) -> None:
        super().__init__(message if underlying is None else f"{message} (last failure: {underlying})")
        self.kind = kind
        self.message = message
        self.code = code
        self.status = status
        self.retryable = retryable
        self.underlying = underlying
