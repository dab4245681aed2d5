"""How a client reaches raffled: HTTP/2 (the `h2` library, cleartext or TLS), raw TCP, UDP."""
from __future__ import annotations

import asyncio
import random
import ssl
import struct
from typing import Dict, List, Optional, Tuple

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from .errors import RaffleError
from .wire import CONTENT_TYPE, ENTRIES_PATH, HEADER_SIZE, decode_reply, WireError


def tls_context(ca_file: Optional[str] = None, alpn: Optional[List[str]] = None) -> ssl.SSLContext:
    """A client TLS context: the system's trust store plus `ca_file` (PEM) when given; TLS 1.2+."""
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if alpn:
        context.set_alpn_protocols(alpn)
    return context


class Transport:
    """What the client needs from a transport. `send` posts frames and returns (status, reply bytes)."""

    requires_checksum = False

    async def send(self, frames: bytes, authorization: Optional[str], timeout: float) -> Tuple[int, bytes]:
        raise NotImplementedError

    async def admin(self, method: str, path: str, body: Optional[bytes], authorization: Optional[str],
                    timeout: float = 30.0) -> Tuple[int, bytes]:
        raise RaffleError("invalid_request", f"{type(self).__name__} has no admin API: use HTTP2Transport")

    async def close(self) -> None:
        return None


class _Exchange:
    def __init__(self) -> None:
        self.status = 0
        self.body = bytearray()
        self.done: "asyncio.Future[None]" = asyncio.get_running_loop().create_future()


class HTTP2Transport(Transport):
    """HTTP/2 to raffled's main port: h2c with prior knowledge, or TLS with ALPN ``h2`` when `tls`
    is given (e.g. ``tls_context(ca_file="ca.pem")``). One connection, multiplexed streams; a lost
    connection is replaced on the next call."""

    def __init__(self, host: str, port: int, tls: Optional[ssl.SSLContext] = None) -> None:
        self.host = host
        self.port = port
        self.tls = tls
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self._conn: Optional[h2.connection.H2Connection] = None
        self._writer: Optional[asyncio.StreamWriter] = None
        self._reader_task: Optional["asyncio.Task[None]"] = None
        self._exchanges: Dict[int, _Exchange] = {}
        self._window_open = asyncio.Event()
        self._lock = asyncio.Lock()

    async def _connection(self) -> h2.connection.H2Connection:
        async with self._lock:
            if self._conn is not None and self._writer is not None and not self._writer.is_closing():
                return self._conn
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None)
            except (OSError, ssl.SSLError) as error:
                raise RaffleError("connection_failed", f"cannot connect to {self.host}:{self.port}: {error}",
                                  retryable=True, underlying=error) from error
            conn = h2.connection.H2Connection(config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
            conn.initiate_connection()
            conn.increment_flow_control_window(16 << 20)
            writer.write(conn.data_to_send())
            self._conn, self._writer = conn, writer
            self._reader_task = asyncio.ensure_future(self._read(reader, conn))
            return conn

    async def _read(self, reader: asyncio.StreamReader, conn: h2.connection.H2Connection) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    self._handle(conn, event)
                if self._writer is not None:
                    self._writer.write(conn.data_to_send())
        except (OSError, h2.exceptions.ProtocolError, ssl.SSLError):
            pass
        finally:
            if self._conn is conn:
                self._conn = None
            for exchange in self._exchanges.values():
                if not exchange.done.done():
                    exchange.done.set_exception(RaffleError("connection_failed", "the connection closed", retryable=True))
            self._exchanges.clear()
            self._window_open.set()

    def _handle(self, conn: h2.connection.H2Connection, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            exchange = self._exchanges.get(event.stream_id)
            for name, value in event.headers or []:
                # Typed as bytes; decoded to str by `header_encoding`: accept either.
                key = name.decode() if isinstance(name, bytes) else str(name)
                if key == ":status" and exchange is not None:
                    exchange.status = int(value)
        elif isinstance(event, h2.events.DataReceived):
            exchange = self._exchanges.get(event.stream_id)
            if exchange is not None and event.data is not None:
                exchange.body += event.data
            conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
            exchange = self._exchanges.pop(event.stream_id, None)
            if exchange is not None and not exchange.done.done():
                exchange.done.set_result(None)
        elif isinstance(event, h2.events.WindowUpdated):
            self._window_open.set()

    async def request(self, method: str, path: str, headers: List[Tuple[str, str]], body: Optional[bytes],
                      timeout: float) -> Tuple[int, bytes]:
        conn = await self._connection()
        writer = self._writer
        assert writer is not None
        scheme = "https" if self.tls else "http"
        exchange = _Exchange()
        stream_id = conn.get_next_available_stream_id()
        self._exchanges[stream_id] = exchange
        conn.send_headers(stream_id, [(":method", method), (":path", path), (":scheme", scheme),
                                      (":authority", f"{self.host}:{self.port}")] + headers, end_stream=not body)
        if body:
            await self._send_body(conn, stream_id, body)
        writer.write(conn.data_to_send())
        try:
            await asyncio.wait_for(asyncio.shield(exchange.done), timeout)
        except asyncio.TimeoutError as error:
            raise RaffleError("timed_out", f"no answer from {self.host}:{self.port} within {timeout} s", retryable=True) from error
        return exchange.status, bytes(exchange.body)

    async def _send_body(self, conn: h2.connection.H2Connection, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(conn.local_flow_control_window(stream_id), conn.max_outbound_frame_size)
            if window <= 0:
                self._window_open.clear()
                if self._writer is not None:
                    self._writer.write(conn.data_to_send())
                await self._window_open.wait()
                if self._conn is not conn:
                    raise RaffleError("connection_failed", "the connection closed", retryable=True)
                continue
            chunk = bytes(view[:window])
            view = view[window:]
            conn.send_data(stream_id, chunk, end_stream=not view)

    async def send(self, frames: bytes, authorization: Optional[str], timeout: float) -> Tuple[int, bytes]:
        headers = [("content-type", CONTENT_TYPE)]
        if authorization:
            headers.append(("authorization", authorization))
        return await self.request("POST", ENTRIES_PATH, headers, frames, timeout)

    async def admin(self, method: str, path: str, body: Optional[bytes], authorization: Optional[str],
                    timeout: float = 30.0) -> Tuple[int, bytes]:
        headers = [("content-type", "application/json")] if body else []
        if authorization:
            headers.append(("authorization", authorization))
        return await self.request(method, path, headers, body, timeout)

    async def close(self) -> None:
        writer, task = self._writer, self._reader_task
        self._conn = self._writer = None
        if writer is not None:
            writer.close()
        if task is not None:
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass


class TCPTransport(Transport):
    """Raw TCP (PROTOCOL.md §12): frames back to back, replies matched by request id; TLS when
    `tls` is given. No admin API, no API key (the server's anonymous limits apply)."""

    def __init__(self, host: str, port: int, tls: Optional[ssl.SSLContext] = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self._writer: Optional[asyncio.StreamWriter] = None
        self._pending: Dict[int, "asyncio.Future[bytes]"] = {}
        self._task: Optional["asyncio.Task[None]"] = None
        self._lock = asyncio.Lock()

    async def _connect(self) -> asyncio.StreamWriter:
        async with self._lock:
            if self._writer is not None and not self._writer.is_closing():
                return self._writer
            try:
                reader, writer = await asyncio.open_connection(
                    self.host, self.port, ssl=self.tls, server_hostname=self.host if self.tls else None)
            except (OSError, ssl.SSLError) as error:
                raise RaffleError("connection_failed", f"cannot connect to {self.host}:{self.port} (raw TCP): {error}",
                                  retryable=True, underlying=error) from error
            self._writer = writer
            self._task = asyncio.ensure_future(self._read(reader, writer))
            return writer

    async def _read(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        buffer = b""
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
                while True:
                    frame = decode_reply(buffer)
                    if frame is None:
                        break
                    future = self._pending.pop(frame.request_id, None)
                    if future is not None and not future.done():
                        future.set_result(buffer[:frame.length])
                    buffer = buffer[frame.length:]
        except (OSError, WireError, ssl.SSLError):
            pass
        finally:
            if self._writer is writer:
                self._writer = None
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(RaffleError("connection_failed", "the raw TCP connection closed", retryable=True))
            self._pending.clear()

    async def send(self, frames: bytes, authorization: Optional[str], timeout: float) -> Tuple[int, bytes]:
        writer = await self._connect()
        request_id = struct.unpack_from("<Q", frames, 12)[0]
        future: "asyncio.Future[bytes]" = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        writer.write(frames)
        try:
            reply = await asyncio.wait_for(future, timeout)
        except asyncio.TimeoutError as error:
            self._pending.pop(request_id, None)
            raise RaffleError("timed_out", f"no raw TCP answer within {timeout} s", retryable=True) from error
        return 200, reply

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._task is not None:
            self._task.cancel()


class _Datagrams(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.pending: Dict[int, "asyncio.Future[bytes]"] = {}

    def datagram_received(self, data: bytes, addr: Tuple[str, int]) -> None:
        if len(data) >= HEADER_SIZE:
            future = self.pending.pop(struct.unpack_from("<Q", data, 12)[0], None)
            if future is not None and not future.done():
                future.set_result(data)


class UDPTransport(Transport):
    """UDP (PROTOCOL.md §13): one checksummed frame per datagram; a request with no reply is sent
    again (same request id) after 100 ms, doubling with full jitter up to 1 s, until `timeout`."""

    requires_checksum = True

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._transport: Optional[asyncio.DatagramTransport] = None
        self._protocol: Optional[_Datagrams] = None

    async def send(self, frames: bytes, authorization: Optional[str], timeout: float) -> Tuple[int, bytes]:
        if self._transport is None or self._protocol is None:
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_datagram_endpoint(_Datagrams, remote_addr=(self.host, self.port))
            self._transport, self._protocol = transport, protocol
        request_id = struct.unpack_from("<Q", frames, 12)[0]
        future: "asyncio.Future[bytes]" = asyncio.get_running_loop().create_future()
        self._protocol.pending[request_id] = future
        deadline = asyncio.get_running_loop().time() + timeout
        delay = 0.1
        while True:
            self._transport.sendto(frames)
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                break
            try:
                return 200, await asyncio.wait_for(asyncio.shield(future), min(random.uniform(0, delay) + delay / 2, left))
            except asyncio.TimeoutError:
                delay = min(delay * 2, 1.0)
        self._protocol.pending.pop(request_id, None)
        raise RaffleError("timed_out", f"no UDP reply from {self.host}:{self.port} within {timeout} s", retryable=True)

    async def close(self) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
