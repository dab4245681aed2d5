"""A blocking wrapper for scripts: the asyncio client on its own event loop thread."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Callable, Coroutine, Dict, List, Optional, Sequence, TypeVar

from .client import RaffleClient, Settings
from .draw import Verification
from .transports import Transport
from .wire import Entry

T = TypeVar("T")


class SyncRaffleClient:
    """`RaffleClient` with blocking methods. `make_transport` is called on the client's loop."""

    def __init__(self, make_transport: Callable[[], Transport], settings: Optional[Settings] = None) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raffled-client", daemon=True)
        self._thread.start()

        async def build() -> RaffleClient:
            return RaffleClient(make_transport(), settings)

        self.client = self._run(build())

    def _run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    def submit(self, entries: Sequence[Entry], raffle: int) -> List[str]:
        return self._run(self.client.submit(entries, raffle))

    def enter(self, user_id: int, raffle: int, tickets: int = 1) -> str:
        return self._run(self.client.enter(user_id, raffle, tickets))

    def create_raffle(self, title: str, duration_seconds: int, winners: int = 1, max_tickets_per_user: int = 1) -> Dict[str, Any]:
        return self._run(self.client.create_raffle(title, duration_seconds, winners, max_tickets_per_user))

    def raffle(self, raffle: int) -> Dict[str, Any]:
        return self._run(self.client.raffle(raffle))

    def close_raffle(self, raffle: int) -> Dict[str, Any]:
        return self._run(self.client.close(raffle))

    def verify(self, raffle: int) -> Verification:
        return self._run(self.client.verify(raffle))

    def close(self) -> None:
        """Shuts the client down and stops its thread."""
        self._run(self.client.shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
