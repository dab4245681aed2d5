#!/usr/bin/env python3
"""The attack catalogue under load (issue #18, item 2), as a bench figure.

A release raffled runs pinned to core 0. A legitimate client (`raffle-bench mobile`: open-loop
requests of 1-10 entries over HTTP/2, durable, latency from each request's scheduled time) runs on
core 1, for each attack first alone (the baseline of that row: the disk's fsync latency drifts on a
shared host, so each attack is compared with a run just before it) and then alongside the attack,
from another address (127.0.0.2, so the per-address limits do not count them together); the
attacker runs on core 1 too,
under SCHED_IDLE (`chrt --idle`), so the legitimate client has that core whenever it wants it. For each attack the table
says how the offender's connections ended (the GOAWAY / RST_STREAM code, an HTTP status, a close,
or for UDP the bytes answered per byte sent), the server's CPU share and peak RSS during the attack,
and the legitimate client's p99 against its baseline (the goal: within 2x).

Usage: Bench/scripts/attacks.py [--seconds 8] [--rate 5000] [--rounds 3] [--durability fsync|none] [--only NAME,...]
(builds raffled and raffle-bench in release first unless --no-build).
"""
import argparse
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
CODES = {0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR", 5: "STREAM_CLOSED",
         6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM", 8: "CANCEL", 9: "COMPRESSION_ERROR", 11: "ENHANCE_YOUR_CALM"}


# -- HTTP/2 frames, by hand (the attacks send what no well-behaved library would) -------------------

def frame(kind, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def settings(pairs=()):
    return frame(4, 0, 0, b"".join(struct.pack(">HI", k, v) for k, v in pairs))


def hpack_string(s):
    b = s.encode()
    assert len(b) < 127
    return bytes([len(b)]) + b


def request_block(method="GET", path="/healthz"):
    # :method GET (2) / POST (3), :scheme http (6), :path literal (name 4), :authority literal (name 1);
    # a POST carries content-type (name 31) application/vnd.raffled.frames, so its stream stays open.
    block = bytes([0x82 if method == "GET" else 0x83, 0x86]) + b"\x04" + hpack_string(path) + b"\x01" + hpack_string("bench")
    if method == "POST":
        block += b"\x0f\x10" + hpack_string("application/vnd.raffled.frames")
    return block


# The attacker's address: not the legitimate client's (127.0.0.1), or the per-address connection cap
# would count them together.
ATTACKER = "127.0.0.2"


def connect(port, timeout=None):
    return socket.create_connection(("127.0.0.1", port), timeout=timeout, source_address=(ATTACKER, 0))


class H2Peer:
    """A raw HTTP/2 connection that notes how the server ended it."""

    def __init__(self, port, window=None):
        self.sock = connect(port)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.ending = None
        pairs = [(4, window)] if window is not None else []
        self.sock.sendall(PREFACE + settings(pairs) + frame(4, 1, 0))

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            self.ending = self.ending or "closed"
            return False

    def poll(self, timeout=0.0):
        """Reads what is there; returns False once the server closed."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(1 << 16)
        except (socket.timeout, BlockingIOError):
            return True
        except OSError:
            self.ending = self.ending or "reset"
            return False
        if not data:
            self.ending = self.ending or "closed"
            return False
        self.buffer += data
        while len(self.buffer) >= 9:
            length = int.from_bytes(self.buffer[:3], "big")
            if len(self.buffer) < 9 + length:
                break
            kind, payload = self.buffer[3], self.buffer[9:9 + length]
            self.buffer = self.buffer[9 + length:]
            if kind == 7 and self.ending is None and len(payload) >= 8:
                self.ending = "GOAWAY " + CODES.get(int.from_bytes(payload[4:8], "big"), str(payload[4:8]))
            elif kind == 3 and self.ending is None and len(payload) >= 4:
                self.ending = "RST_STREAM " + CODES.get(int.from_bytes(payload[:4], "big"), "?")
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


REFUSED = "refused on arrival"


def open_peer(port, endings, window=None):
    """An H2Peer, or None (counted in `endings`) when the server refuses the connection as it arrives
    (the per-address limits close it with a reset)."""
    try:
        return H2Peer(port, window)
    except OSError:
        endings[REFUSED] = endings.get(REFUSED, 0) + 1
        return None


# -- The attacks: each runs until `stop` and returns a summary -------------------------------------

def repeated(port, stop, make_frames, per_round=20, reconnect=True):
    """Sends make_frames(peer, i) in rounds on one connection, reading between rounds; opens a new
    connection each time the server cuts one off. Summary: how connections ended, how many."""
    endings, connections, peer, i = {}, 0, None, 0
    while not stop.is_set():
        if peer is None:
            connections += 1
            peer = open_peer(port, endings)
            if peer is None:
                continue
            i = 0  # frame numbering (and stream ids) start over on each connection
        ok = peer.send(b"".join(make_frames(peer, i + k) for k in range(per_round)))
        i += per_round
        # Read between rounds: a GOAWAY is seen before the close (data the server left unread would
        # make its close a reset, which discards what we had not read yet).
        ok = peer.poll(0.001) and ok
        if not ok or peer.ending:
            while peer.ending is None and peer.poll(0.5):
                pass
            endings[peer.ending] = endings.get(peer.ending, 0) + 1
            peer.close()
            peer = None
            if not reconnect:
                break
            time.sleep(0.05)
    if peer:
        peer.close()
    return {"connections": connections, "endings": endings}


def rapid_reset(port, stop):
    return repeated(port, stop, lambda p, i: frame(1, 0x5, 2 * i + 1, request_block()) + frame(3, 0, 2 * i + 1, struct.pack(">I", 8)))


def continuation_flood(port, stop):
    junk = b"".join(b"\x00" + hpack_string("x-junk-%d" % k) + hpack_string("y" * 100) for k in range(100))

    def frames(p, i):
        return frame(1, 0x1, 1, request_block()) if i == 0 else frame(9, 0, 1, junk)
    return repeated(port, stop, frames, per_round=5)


def hpack_bomb(port, stop):
    # One 1 KiB header stored in the dynamic table (literal with incremental indexing; it fits the
    # 4 KiB table), then a block repeating it by index (62) 4,000 times: 4 MB of headers from 4 KB on
    # the wire. (The runs recorded on 2026-11-24 sent a malformed version — a 4,096-byte length over
    # 4,000 bytes — which nghttp2 rejected as COMPRESSION_ERROR before any bomb.)
    big = b"\x40" + hpack_string("x-bomb") + bytes([0x7F, 0x81, 0x07]) + b"b" * 1024  # 127 + 1 + 7·128 = 1,024
    def frames(p, i):
        block = request_block() + (big if i == 0 else b"") + b"\xbe" * 4000
        return frame(1, 0x5, 2 * i + 1, block)
    return repeated(port, stop, frames, per_round=4)


def settings_flood(port, stop):
    # Never reads: the server's SETTINGS ACKs pile up unsent.
    return flood_without_reading(port, stop, settings([(3, 100)]))


def ping_flood(port, stop):
    return flood_without_reading(port, stop, frame(6, 0, 0, b"12345678"))


def flood_without_reading(port, stop, one):
    endings, connections = {}, 0
    chunk = one * 500
    while not stop.is_set():
        connections += 1
        peer = open_peer(port, endings)
        if peer is None:
            continue
        peer.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        peer.sock.settimeout(1.0)
        while not stop.is_set():
            try:
                peer.sock.sendall(chunk)
            except socket.timeout:
                continue  # the server stopped reading (our side is full): keep the pressure on
            except OSError:
                break
        # How it ended: read what the server said last (it may be behind unread ACKs).
        peer.sock.settimeout(0.5)
        tail = b""
        try:
            while True:
                data = peer.sock.recv(1 << 20)
                if not data:
                    break
                tail = (tail + data)[-4096:]
        except OSError:
            pass
        at = tail.rfind(b"\x07\x00\x00\x00\x00\x00")
        ending = "GOAWAY " + CODES.get(int.from_bytes(tail[at + 10:at + 14], "big"), "?") if at >= 3 and len(tail) >= at + 14 else "closed"
        endings[ending] = endings.get(ending, 0) + 1
        peer.close()
    return {"connections": connections, "endings": endings}


def empty_data(port, stop):
    def frames(p, i):
        return frame(1, 0x4, 1, request_block("POST", "/v1/entries")) if i == 0 else frame(0, 0, 1)
    return repeated(port, stop, frames)


def zero_window(port, stop, count=50):
    # Streams that get no window: their answers wait; the peers PING so they look alive.
    peers = []
    for _ in range(count):
        p = H2Peer(port, window=0)
        p.send(frame(1, 0x5, 1, request_block("GET", "/metrics")))
        peers.append(p)
    started = time.time()
    ended_after = []
    while not stop.is_set() and any(p.ending is None for p in peers):
        for p in peers:
            if p.ending is None:
                p.send(frame(6, 0, 0, b"pingping"))
                if not p.poll(0.0) or p.ending:
                    ended_after.append(time.time() - started)
        stop.wait(1.0)
    endings = {}
    for p in peers:
        endings[p.ending or "still open"] = endings.get(p.ending or "still open", 0) + 1
        p.close()
    return {"connections": count, "endings": endings, "cut off after": "%.0f s" % max(ended_after) if ended_after else "-"}


def slowloris(port, stop, count=200):
    socks = []
    for _ in range(count):
        s = connect(port)
        s.sendall(b"POST /v1/entries HTTP/1.1\r\nhost: bench\r\n")
        socks.append(s)
    started, closed_at = time.time(), {}
    while not stop.is_set() and len(closed_at) < count:
        for n, s in enumerate(socks):
            if n in closed_at:
                continue
            try:
                s.sendall(b"x")  # one byte of a header name per second, never a whole head
                s.settimeout(0.0)
                if s.recv(4096) == b"":
                    closed_at[n] = time.time() - started
            except BlockingIOError:
                pass
            except OSError:
                closed_at[n] = time.time() - started
        stop.wait(1.0)
    for s in socks:
        s.close()
    return {"connections": count, "endings": {"closed": len(closed_at), "still open": count - len(closed_at)},
            "cut off after": "%.0f s" % max(closed_at.values()) if closed_at else "-"}


def idle_connections(port, stop, count=2000):
    socks, refused = [], 0
    for _ in range(count):
        try:
            socks.append(connect(port, timeout=2))
        except OSError:
            refused += 1
    time.sleep(1.0)
    open_ = 0
    for s in socks:
        s.settimeout(0.0)
        try:
            if s.recv(1) == b"":
                continue
            open_ += 1
        except BlockingIOError:
            open_ += 1
        except OSError:
            pass
    stop.wait()
    for s in socks:
        s.close()
    return {"connections": count, "endings": {"closed on arrival": count - refused - open_, "held open": open_, "refused": refused}}


def h1_header_flood(port, stop):
    endings, connections = {}, 0
    # 100 header fields (the limit is 64), small enough to arrive in one read.
    head = b"POST /v1/entries HTTP/1.1\r\nhost: bench\r\n" + b"".join(b"x-h%d: v\r\n" % k for k in range(100)) + b"\r\n"
    while not stop.is_set():
        connections += 1
        try:
            s = connect(port)
        except OSError:
            endings[REFUSED] = endings.get(REFUSED, 0) + 1
            continue
        try:
            s.sendall(head)
            s.settimeout(2.0)
            reply = s.recv(4096)
            status = reply.split(b" ")[1].decode() if reply.startswith(b"HTTP/1.1 ") else "no answer"
            s.settimeout(2.0)
            closed = s.recv(4096) == b""
            ending = "HTTP %s%s" % (status, ", closed" if closed else "")
        except OSError:
            ending = "closed"
        endings[ending] = endings.get(ending, 0) + 1
        s.close()
    return {"connections": connections, "endings": endings}


def udp_spoofed(port, stop, sources=256):
    # Loopback accepts any 127/8 source: one socket per "spoofed" source address, each sending junk,
    # oversized and well-formed-but-wrong datagrams. Amplification = bytes answered / bytes sent.
    socks = []
    for n in range(sources):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.%d.%d.%d" % (1 + n // 65536 % 250, n // 256 % 256, n % 256 or 1), 0))
        s.setblocking(False)
        socks.append(s)
    payloads = [os.urandom(40), os.urandom(1400), b"RFL1" + os.urandom(60), b"\x00" * 12]
    sent = received = replies = 0
    while not stop.is_set():
        for s in socks:
            p = random.choice(payloads)
            try:
                s.sendto(p, ("127.0.0.1", port))
                sent += len(p)
            except OSError:
                pass
            try:
                while True:
                    data = s.recv(65536)
                    received += len(data)
                    replies += 1
            except OSError:
                pass
        time.sleep(0.002)
    for s in socks:
        s.close()
    return {"connections": sources, "endings": {"replies": replies},
            "amplification": "%.3f (%d bytes answered for %d sent)" % (received / max(sent, 1), received, sent)}


# name, function, transport; attacks that wait for a timeout run at least this long (s).
MINIMUM = {"zero-window readers (50)": 12, "HTTP/1.1 slowloris (200)": 16}
ATTACKS = [
    ("rapid reset", rapid_reset, "http"),
    ("CONTINUATION flood", continuation_flood, "http"),
    ("HPACK header-list bomb", hpack_bomb, "http"),
    ("SETTINGS flood, never reads", settings_flood, "http"),
    ("PING flood, never reads", ping_flood, "http"),
    ("empty DATA frames", empty_data, "http"),
    ("zero-window readers (50)", zero_window, "http"),
    ("HTTP/1.1 slowloris (200)", slowloris, "http"),
    ("2,000 idle connections, one address", idle_connections, "http"),
    ("HTTP/1.1 header flood", h1_header_flood, "http"),
    ("UDP from 256 spoofed sources", udp_spoofed, "udp"),
]


# -- The driver -------------------------------------------------------------------------------------

def pin(core, args):
    return ["taskset", "-c", str(core)] + args if (os.cpu_count() or 1) >= 2 else args


def server_sample(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open("/proc/%d/status" % pid) as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return cpu, rss


COUNTED = [  # server metrics shown per row (deltas), short names
    ("raffled_connections_total", "conns"),
    ('raffled_connections_refused_total{reason="per_address_rate"}', "rate-refused"),
    ('raffled_connections_refused_total{reason="per_address_cap"}', "cap-refused"),
    ("raffled_goaway_enhance_your_calm_total", "calm"),
    ('raffled_connections_closed_total{reason="slow_reader"}', "slow-reader"),
    ('raffled_udp_datagrams_total{result="dropped"}', "udp-dropped"),
]


def counters(port):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read().decode()
    values = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            try:
                values[name] = float(value)
            except ValueError:
                pass
    return values


def legit(args, port, key, out):
    """The legitimate client's run: returns its p99 (ms) and requests/s."""
    bench = os.path.join(ROOT, "Bench/.build/release/raffle-bench")
    cmd = pin(1, [bench, "mobile", "--target", "127.0.0.1:%d" % port, "--admin-key", key, "--rate", str(args.rate),
                  "--seconds", str(args.seconds), "--connections", "16", "--json", out])
    if os.path.exists(out):
        os.remove(out)
    run = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=args.seconds * 6 + 60)
    if not os.path.exists(out):
        sys.exit("attacks: the legitimate client failed: " + run.stderr[-2000:])
    with open(out) as f:
        result = json.load(f)
    return result["latencyMillis"]["p99"], result["requestsPerSecond"]


def run_attack(name, port, udp_port, seconds, core=1):
    """Runs one attack in a child process (SCHED_IDLE) on core 1 for `seconds`; returns its summary."""
    # SCHED_IDLE (chrt --idle): the attacker only gets core 1 when the legitimate client does not want
    # it, and gives it up at once when the client wakes (nice 19 alone still delays its wake-ups).
    cmd = pin(core, ["chrt", "--idle", "0", sys.executable, __file__, "--attack", name, "--port", str(port),
                  "--udp-port", str(udp_port), "--seconds", str(seconds)])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--only", default="")
    parser.add_argument("--rounds", type=int, default=3, help="alone/attack pairs per attack; medians are shown")
    parser.add_argument("--durability", default="fsync", help="the server's durability: fsync (default) or none")
    parser.add_argument("--attacker-core", type=int, default=1,
                        help="1 (default): beside the client; 0: on the server's core, using only the cycles the server leaves idle")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--attack")
    parser.add_argument("--port", type=int)
    parser.add_argument("--udp-port", type=int)
    args = parser.parse_args()

    if args.attack:  # child: run one attack
        stop = threading.Event()
        fn, transport = next((f, t) for n, f, t in ATTACKS if n == args.attack)
        result = {}
        worker = threading.Thread(target=lambda: result.update(fn(args.udp_port if transport == "udp" else args.port, stop)), daemon=True)
        worker.start()
        time.sleep(args.seconds)
        stop.set()
        worker.join(timeout=15)
        print(json.dumps(result or {"endings": {"attack did not finish": 1}}))
        return

    if not args.no_build:
        print("attacks: building raffled and raffle-bench (release)...", flush=True)
        subprocess.run(["swift", "build", "-c", "release", "--product", "raffled"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        subprocess.run(["swift", "build", "-c", "release", "--product", "raffle-bench"], cwd=os.path.join(ROOT, "Bench"), check=True,
                       stdout=subprocess.DEVNULL)
    tmp = tempfile.mkdtemp()
    port = 18580
    server = subprocess.Popen(pin(0, [os.path.join(ROOT, ".build/release/raffled"), "--port", str(port), "--data", tmp + "/data",
                                      "--loops", "1", "--idle-timeout", "5", "--durability", args.durability, "--global-rate", "0", "--anonymous-rate", "1000000000",
                                      "--log-level", "error"]), stdout=subprocess.DEVNULL, stderr=open(tmp + "/raffled.log", "w"))
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        key = open(tmp + "/data/admin.key").read().strip()
        only = [s.strip() for s in args.only.split(",") if s.strip()]
        chosen = [a for a in ATTACKS if not only or any(o.lower() in a[0].lower() for o in only)]
        legit(args, port, key, tmp + "/warm-up.json")  # connections, caches, the first raffle: not measured
        print("attacks: raffled on core 0 (--loops 1, --idle-timeout 5, --durability %s); legitimate client `raffle-bench mobile` "
              "on core 1 at %d requests/s for %.0f s, alone then beside the attack, %d rounds (medians shown); attacker on core "
              "%d under SCHED_IDLE, from %s" % (args.durability, args.rate, args.seconds, args.rounds, args.attacker_core, ATTACKER))
        print()
        header = "%-36s | %-44s | %6s | %7s | %15s | %s" % (
            "attack", "offender ended with", "CPU", "RSS MiB", "p99 ms: alone", "with attack (ratio)")
        print(header)
        print("-" * len(header))
        worst = 0.0
        ratios = []
        for name, _, _ in chosen:
            pairs, counted_total, endings_total, extra, cpu_share, peak = [], {}, {}, None, [], [0]
            for _ in range(args.rounds):
                base, _ = legit(args, port, key, tmp + "/baseline.json")
                cpu_a, _ = server_sample(server.pid)
                before = counters(port)
                t_a = time.time()
                child = run_attack(name, port, port + 2, max(args.seconds + 2, MINIMUM.get(name, 0)), args.attacker_core)
                time.sleep(1.0)  # the attack is under way before the client starts
                sampling = threading.Event()

                def sample():
                    while not sampling.is_set():
                        try:
                            peak[0] = max(peak[0], server_sample(server.pid)[1])
                        except OSError:
                            return
                        sampling.wait(0.1)
                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                p99, rate = legit(args, port, key, tmp + "/legit.json")
                out, _ = child.communicate(timeout=60)
                sampling.set()
                cpu_b, _ = server_sample(server.pid)
                cpu_share.append(100 * (cpu_b - cpu_a) / (time.time() - t_a))
                after = counters(port)
                for m, short in COUNTED:
                    counted_total[short] = counted_total.get(short, 0) + after.get(m, 0) - before.get(m, 0)
                summary = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"endings": {"no summary": 1}}
                for k, v in summary.get("endings", {}).items():
                    endings_total[k] = endings_total.get(k, 0) + v
                extra = summary.get("amplification") or summary.get("cut off after") or extra
                pairs.append((base, p99, rate))
                time.sleep(1.0)
            median = lambda xs: sorted(xs)[len(xs) // 2]
            base, p99 = median([b for b, _, _ in pairs]), median([p for _, p, _ in pairs])
            ratio = median([p / b for b, p, _ in pairs if b])
            rate = min(r for _, _, r in pairs)
            worst = max(worst, ratio)
            ratios.append(ratio)
            endings = ", ".join("%s x%d" % (k, v) for k, v in sorted(endings_total.items(), key=lambda kv: -kv[1]))
            if extra:
                endings += " (%s)" % extra
            counted = ", ".join("%s +%d" % (k, v) for k, v in counted_total.items() if v > 0)
            print("%-36s | %-44s | %5.0f%% | %7d | %15.2f | %.2f (%.2fx)%s" % (
                name, endings[:44], median(cpu_share), peak[0] // 1024, base, p99, ratio,
                "" if rate >= args.rate * 0.95 else " (client reached %.0f/s)" % rate), flush=True)
            if len(endings) > 44:
                print("%-36s   %s" % ("", endings[44:]))
            print("%-36s   server counted: %s" % ("", counted or "-"))
            print("%-36s   rounds (alone -> with attack, ms): %s" % ("", ", ".join("%.2f -> %.2f" % (b, p) for b, p, _ in pairs)))
        print()
        print("p99 with attack / alone: median %.2fx, worst %.2fx (goal: within 2x); server still healthy: %s" % (
            sorted(ratios)[len(ratios) // 2], worst, urllib.request.urlopen("http://127.0.0.1:%d/healthz" % port, timeout=2).read().decode()))
        print("(CPU: the server's share of its core while the attack and the client ran; RSS: its peak, which also grows with the "
              "entries the client stores, ~30 bytes each: ~50 MiB per row at 3 rounds of 10 s)")
    finally:
        server.terminate()
        server.wait(timeout=20)
        subprocess.run(["rm", "-rf", tmp])


if __name__ == "__main__":
    main()
