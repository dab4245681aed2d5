"""A real raffled for the live tests: started on 127.0.0.1 with port 0, stopped after each test."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Iterator, List, Optional

import pytest

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))


@dataclass
class Server:
    process: "subprocess.Popen[str]"
    data: str
    port: int
    tcp_port: Optional[int]
    udp_port: Optional[int]
    admin_key: str

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait()


def start_raffled(data: str, *extra: str, port: int = 0) -> Server:
    binary = os.environ.get("RAFFLED", os.path.join(ROOT, ".build", "debug", "raffled"))
    if not os.access(binary, os.X_OK):
        pytest.skip(f"no raffled at {binary}: build it (swift build) or set RAFFLED")
    process = subprocess.Popen([binary, "--port", str(port), "--data", data, "--loops", "1", "--log-level", "warning", *extra],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    lines: List[str] = []
    deadline = time.monotonic() + 30
    assert process.stdout is not None
    while time.monotonic() < deadline and not any(line.startswith("try:") for line in lines):
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line)
    text = "".join(lines)
    found = re.search(r"https?://127\.0\.0\.1:(\d+)", text)
    if not found:
        process.kill()
        raise RuntimeError(f"raffled did not start: {text}")
    tcp = re.search(r"raw TCP(?: over TLS)? port (\d+)", text)
    udp = re.search(r"UDP port (\d+)", text)
    with open(os.path.join(data, "admin.key"), encoding="utf-8") as f:
        key = f.read().strip()
    return Server(process, data, int(found.group(1)), int(tcp.group(1)) if tcp else None,
                  int(udp.group(1)) if udp else None, key)


@pytest.fixture
def raffled(tmp_path: "os.PathLike[str]") -> Iterator[Callable[..., Server]]:
    started: List[Server] = []

    def start(*extra: str, port: int = 0, data: Optional[str] = None) -> Server:
        server = start_raffled(data or os.path.join(str(tmp_path), f"data{len(started)}"), *extra, port=port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
