"""The client against a real raffled on 127.0.0.1: every transport, throttling, errors, bulk, draws."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from typing import Callable, List

import pytest

from raffled import (Entry, HTTP2Transport, RaffleClient, RaffleError, Settings, SyncRaffleClient, TCPTransport,
                     UDPTransport, tls_context)

from .conftest import ROOT, Server


def admin(server: Server, **settings: object) -> RaffleClient:
    return RaffleClient(HTTP2Transport("127.0.0.1", server.port), Settings(admin_key=server.admin_key, **settings))  # type: ignore[arg-type]


def test_http2_entries_admin_and_a_verified_draw(raffled: Callable[..., Server]) -> None:
    server = raffled()

    async def run() -> None:
        async with admin(server) as client:
            info = await client.create_raffle("py", 600, winners=2, max_tickets_per_user=3)
            raffle = int(info["id"])
            assert isinstance(info["id"], str), "64-bit ids are decimal strings"
            assert await client.submit([Entry(1), Entry(2, 3), Entry(1)], raffle) == ["accepted", "accepted", "already_entered"]
            assert await client.submit([Entry(3, 9)], raffle) == ["invalid_tickets"]
            outcomes = await asyncio.gather(*(client.enter(user, raffle) for user in range(10, 30)))
            assert outcomes == ["accepted"] * 20
            assert await client.ping(7) == 7
            assert (await client.raffle(raffle))["entries"] == 22
            closed = await client.close(raffle)
            assert closed["state"] == "drawn" and len(closed["draw"]["winners"]) == 2
            result = await client.verify(raffle)
            assert result.ok, result.lines
            assert [str(w) for w in result.winners] == closed["draw"]["winners"]
            assert await client.submit([Entry(99)], raffle) == ["raffle_closed"]

    asyncio.run(run())


def test_errors_are_typed(raffled: Callable[..., Server]) -> None:
    server = raffled("--anonymous-rate", "10", "--anonymous-burst", "6")

    async def run() -> None:
        async with admin(server) as client:
            raffle = int((await client.create_raffle("errors", 600))["id"])
            with pytest.raises(RaffleError) as unknown:
                await client.submit([Entry(1)], raffle + 100)
            assert unknown.value.kind == "server" and unknown.value.code == "UNKNOWN_RAFFLE" and not unknown.value.retryable
            with pytest.raises(RaffleError) as burst:
                await client.submit([Entry(u) for u in range(1, 11)], raffle)
            assert burst.value.code == "BATCH_EXCEEDS_BURST"
            with pytest.raises(RaffleError) as empty:
                await client.submit([], raffle)
            assert empty.value.kind == "invalid_request"
        anonymous = RaffleClient(HTTP2Transport("127.0.0.1", server.port))
        with pytest.raises(RaffleError) as refused:
            await anonymous.close(raffle)
        assert refused.value.kind == "http" and refused.value.status == 401
        await anonymous.shutdown()
        nobody = RaffleClient(HTTP2Transport("127.0.0.1", 1), Settings(deadline=0.5))
        with pytest.raises(RaffleError) as down:
            await nobody.submit([Entry(1)], raffle)
        assert down.value.kind in ("deadline_exceeded", "retry_budget_exhausted")
        assert "cannot connect" in str(down.value)

    asyncio.run(run())


def test_throttling_waits_the_exact_retry_after(raffled: Callable[..., Server]) -> None:
    server = raffled("--anonymous-rate", "20", "--anonymous-burst", "6")

    async def run() -> None:
        async with admin(server) as client:
            raffle = int((await client.create_raffle("throttle", 600))["id"])
            loop = asyncio.get_running_loop()
            start = loop.time()
            for k in range(4):  # cost 3 each: the burst of 6 takes two, then one every 150 ms
                assert await client.submit([Entry(100 + 2 * k), Entry(101 + 2 * k)], raffle) == ["accepted", "accepted"]
            assert client.throttled >= 1
            assert loop.time() - start >= 0.2, "the throttled batches waited for their tokens"

    asyncio.run(run())


def test_raw_tcp_and_udp(raffled: Callable[..., Server]) -> None:
    server = raffled()

    async def run() -> None:
        async with admin(server) as client:
            raffle = int((await client.create_raffle("sockets", 600))["id"])
        assert server.tcp_port and server.udp_port
        async with RaffleClient(TCPTransport("127.0.0.1", server.tcp_port)) as tcp:
            results = await asyncio.gather(*(tcp.submit([Entry(k)], raffle) for k in range(1, 51)))
            assert all(r == ["accepted"] for r in results), "pipelined on one connection, matched by request id"
        async with RaffleClient(UDPTransport("127.0.0.1", server.udp_port)) as udp:
            assert await udp.submit([Entry(1), Entry(500)], raffle) == ["already_entered", "accepted"]
            with pytest.raises(RaffleError) as large:
                await udp.submit([Entry(1000 + k) for k in range(100)], raffle)
            assert large.value.code == "FRAME_TOO_LARGE"
        async with admin(server) as client:
            assert (await client.raffle(raffle))["entries"] == 51

    asyncio.run(run())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_bulk_across_a_server_restart(raffled: Callable[..., Server], tmp_path: "os.PathLike[str]") -> None:
    port = free_port()
    data = os.path.join(str(tmp_path), "bulk")
    server = raffled(port=port, data=data)

    async def run() -> None:
        key = server.admin_key
        client = RaffleClient(HTTP2Transport("127.0.0.1", port), Settings(admin_key=key, deadline=30, backoff_cap=0.5))
        raffle = int((await client.create_raffle("bulk", 600))["id"])
        batches = [[Entry(b * 100 + k + 1) for k in range(100)] for b in range(60)]
        restarted: List[Server] = []

        async def on_ack(batch: object, outcomes: List[str]) -> None:
            if not restarted and outcomes and client.attempts >= 20:
                server.process.kill()  # kill -9 mid-bulk: acknowledged batches must survive
                server.process.wait()
                restarted.append(raffled(port=port, data=data))

        counts = await client.bulk(raffle, batches, window=4, on_ack=on_ack)
        assert restarted, "the server was restarted during the run"
        assert sum(counts.values()) == 6000
        assert set(counts) <= {"accepted", "already_entered"}
        assert (await client.raffle(raffle))["entries"] == 6000, "nothing lost, nothing doubled"
        await client.shutdown()

    asyncio.run(run())


def test_http2_over_tls_and_the_sync_wrapper(raffled: Callable[..., Server], tmp_path: "os.PathLike[str]") -> None:
    certs = os.path.join(str(tmp_path), "certs")
    subprocess.run([os.path.join(ROOT, "scripts", "dev-cert"), certs], check=True, capture_output=True)
    server = raffled("--tls-cert", os.path.join(certs, "server.pem"), "--tls-key", os.path.join(certs, "server.key"))
    ca = os.path.join(certs, "ca.pem")
    client = SyncRaffleClient(lambda: HTTP2Transport("localhost", server.port, tls_context(ca)), Settings(admin_key=server.admin_key))
    try:
        raffle = int(client.create_raffle("tls", 600)["id"])
        assert client.submit([Entry(5)], raffle) == ["accepted"]
        assert client.enter(6, raffle) == "accepted"
        assert client.raffle(raffle)["entries"] == 2
    finally:
        client.close()
