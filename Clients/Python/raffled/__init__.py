"""Python client for raffled (Protocol/PROTOCOL.md, Protocol/DRAW.md)."""
from .client import RaffleClient, RetryBudget, Settings
from .draw import Verification, verify
from .errors import RaffleError
from .sync import SyncRaffleClient
from .transports import HTTP2Transport, TCPTransport, Transport, UDPTransport, tls_context
from .wire import Entry, WireError, crc32c, decode_all, decode_reply, encode_batch, encode_ping

__all__ = [
    "Entry", "HTTP2Transport", "RaffleClient", "RaffleError", "RetryBudget", "Settings", "SyncRaffleClient",
    "TCPTransport", "Transport", "UDPTransport", "Verification", "WireError", "crc32c", "decode_all", "decode_reply",
    "encode_batch", "encode_ping", "tls_context", "verify",
]
__version__ = "0.1.0"
