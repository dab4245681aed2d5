"""The client against a real raffled on 127.0.0.1: every transport, throttling, errors, bulk, draws."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from typing import Callable, List

import pytest

from raffled import (Entry, HTTP2Transport, RaffleClient, RaffleError, Settings, SyncRaffleClient, TCPTransport, encode_batch,
                     UDPTransport, tls_context)

from .conftest import ROOT, Server


def admin(server: Server, **settings: object) -> RaffleClient:
    return RaffleClient(HTTP2Transport("127.0.0.1", server.port), Settings(admin_key=server.admin_key, **settings))  # type: ignore[arg-type]


def test_http2_entries_admin_and_a_verified_draw(raffled: Callable[..., Server]) -> None:
    server = raffled()

    async def run() -> None:
        async with admin(server) as client:
            info = await client.create_raffle("py", 600, winners=2, max_tickets_per_user=3, expected_entries=1000)
            raffle = int(info["id"])
            assert isinstance(info["id"], str), "64-bit ids are decimal strings"
            assert info["spec"]["expectedEntries"] == 1000, "the sizing hint is echoed in the spec"
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


async def raw_tcp(port: int, data: bytes) -> List[str]:
    """Sends `data` on a raw TCP connection, half-closes, and returns the reply frames' summaries."""
    from raffled.wire import ErrorReply, decode_all
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(data)
    await writer.drain()
    writer.write_eof()
    replies = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    out: List[str] = []
    for frame in decode_all(replies):
        out.append(frame.body.name if isinstance(frame.body, ErrorReply) else type(frame.body).__name__)
    return out


def test_every_error_a_client_can_provoke(raffled: Callable[..., Server]) -> None:
    import struct
    from raffled.wire import ErrorReply, _frame, decode_all
    server = raffled("--anonymous-rate", "1000", "--anonymous-burst", "50")

    async def run() -> None:
        async with admin(server) as client:
            raffle = int((await client.create_raffle("codes", 600))["id"])
            assert server.tcp_port and server.udp_port
            good = encode_batch(1, raffle, [Entry(1)])
            cases = {
                "BAD_MAGIC": b"XX" + good[2:],
                "UNSUPPORTED_VERSION": good[:2] + b"\x02" + good[3:],
                "NONZERO_RESERVED": good[:6] + b"\x01\x00" + good[8:],
                "UNKNOWN_FLAGS": good[:4] + b"\x02\x00" + good[6:],
                "CHECKSUM_MISMATCH": encode_batch(1, raffle, [Entry(1)], checksum=True)[:20] + b"\0\0\0\0" + good[24:],
                "UNKNOWN_FRAME_TYPE": _frame(9, b"", 1, False),
                "UNEXPECTED_FRAME_TYPE": _frame(2, struct.pack("<QII", raffle, 0, 0), 1, False),
                "MALFORMED_PAYLOAD": _frame(5, b"\0" * 4, 1, False),
                "EMPTY_BATCH": _frame(1, struct.pack("<QII", raffle, 0, 0), 1, False),
                "FRAME_TOO_LARGE": good[:8] + struct.pack("<I", 1 << 24) + good[12:],
                "TRUNCATED_FRAME": good[:30],
                "UNKNOWN_RAFFLE": encode_batch(1, raffle + 1000, [Entry(1)]),
                "BATCH_EXCEEDS_BURST": encode_batch(1, raffle, [Entry(u) for u in range(1, 60)]),
            }
            for code, data in cases.items():
                replies = await raw_tcp(server.tcp_port, data)
                assert replies and replies[-1] == code, f"{code}: {replies}"
            # UDP requires the checksum.
            udp = RaffleClient(UDPTransport("127.0.0.1", server.udp_port))
            status, reply = await udp.transport.send(encode_batch(2, raffle, [Entry(2)]), None, 3.0)
            body = decode_all(reply)[0].body
            assert isinstance(body, ErrorReply) and body.name == "CHECKSUM_REQUIRED"
            await udp.shutdown()
            # HTTP/2: the frames content type is required.
            transport = client.transport
            assert isinstance(transport, HTTP2Transport)
            status, reply = await transport.request("POST", "/v1/entries", [("content-type", "text/plain")], good, 5.0)
            body = decode_all(reply)[0].body
            assert status == 415 and isinstance(body, ErrorReply) and body.name == "BAD_CONTENT_TYPE"

    asyncio.run(run())


def test_the_retry_after_hint_is_enough(raffled: Callable[..., Server]) -> None:
    from raffled.wire import Throttled, decode_all
    server = raffled("--anonymous-rate", "20", "--anonymous-burst", "6")

    async def run() -> None:
        async with admin(server) as client:
            raffle = int((await client.create_raffle("hint", 600))["id"])
            transport = HTTP2Transport("127.0.0.1", server.port)  # one connection: one anonymous bucket
            for k in range(2):  # cost 3 each: the burst of 6 is spent
                await transport.send(encode_batch(k + 1, raffle, [Entry(10 + 2 * k), Entry(11 + 2 * k)]), None, 5.0)
            _, reply = await transport.send(encode_batch(3, raffle, [Entry(20), Entry(21)]), None, 5.0)
            throttled = decode_all(reply)[0].body
            assert isinstance(throttled, Throttled) and throttled.reason == "rate_limited"
            assert 0 < throttled.retry_after_ms <= 150, "3 tokens at 20 a second: at most 150 ms"
            await asyncio.sleep(throttled.retry_after_ms / 1000 + 0.005)
            _, reply = await transport.send(encode_batch(4, raffle, [Entry(20), Entry(21)]), None, 5.0)
            assert decode_all(reply)[0].body.__class__.__name__ == "BatchAck", "waiting the hint is enough"
            await transport.close()

    asyncio.run(run())
