"""The golden vectors of Protocol/vectors, decoded and encoded by this client."""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Dict, List

import pytest

from raffled import draw
from raffled.wire import BatchAck, Entry, ErrorReply, Pong, Throttled, WireError, crc32c, decode_reply, encode_batch, encode_ping

VECTORS = os.path.join(os.path.dirname(__file__), "..", "..", "..", "Protocol", "vectors")


def load(kind: str) -> List[Dict[str, Any]]:
    out = []
    for path in sorted(glob.glob(os.path.join(VECTORS, kind, "*.json"))):
        with open(path, encoding="utf-8") as f:
            v = json.load(f)
        v["name"] = os.path.basename(path)[:-5]
        out.append(v)
    assert out, f"no {kind} vectors in {VECTORS}"
    return out


def test_crc32c_check_value() -> None:
    assert crc32c(b"123456789") == 0xE3069283


@pytest.mark.parametrize("v", [v for v in load("valid") if v["direction"] == "server_to_client"], ids=lambda v: v["name"])
def test_reply_vectors_decode_to_their_meaning(v: Dict[str, Any]) -> None:
    data = bytes.fromhex(v["hex"])
    frame = decode_reply(data)
    assert frame is not None and frame.length == len(data)
    meaning = v["frame"]
    assert frame.request_id == int(meaning["request_id"])
    kind = meaning["type"]
    if kind == "batch_ack":
        assert isinstance(frame.body, BatchAck)
        assert frame.body.raffle_id == int(meaning["batch_ack"]["raffle_id"])
        assert list(frame.body.outcomes) == meaning["batch_ack"]["outcomes"]
    elif kind == "throttled":
        assert isinstance(frame.body, Throttled)
        assert frame.body.retry_after_ms == meaning["throttled"]["retry_after_ms"]
        assert frame.body.reason == meaning["throttled"]["reason"]
    elif kind == "error":
        assert isinstance(frame.body, ErrorReply)
        assert frame.body.name == meaning["error"]["code"]
        assert frame.body.message == meaning["error"]["message"]
    elif kind == "pong":
        assert isinstance(frame.body, Pong)
        assert frame.body.value.to_bytes(8, "little").hex() == meaning["pong"]["opaque"]
    else:
        pytest.fail(f"unexpected type {kind}")


@pytest.mark.parametrize("v", [v for v in load("valid") if v["frame"]["type"] in ("entry_batch", "ping")
                               and v["direction"] == "client_to_server"], ids=lambda v: v["name"])
def test_request_vectors_encode_byte_for_byte(v: Dict[str, Any]) -> None:
    meaning = v["frame"]
    if meaning["flags"] not in ([], ["checksum"]):
        pytest.skip("flags this client never sets")
    checksum = meaning["flags"] == ["checksum"]
    request_id = int(meaning["request_id"])
    if meaning["type"] == "ping":
        data = encode_ping(request_id, int.from_bytes(bytes.fromhex(meaning["ping"]["opaque"]), "little"), checksum)
    else:
        batch = meaning["entry_batch"]
        if any(e["reserved"] for e in batch["entries"]):
            pytest.skip("reserved entry fields this client never sets")
        entries = [Entry(int(e["user_id"]), e["tickets"]) for e in batch["entries"]]
        data = encode_batch(request_id, int(batch["raffle_id"]), entries, checksum)
    assert data.hex() == v["hex"]


@pytest.mark.parametrize("v", [v for v in load("invalid") if v["direction"] == "server_to_client"], ids=lambda v: v["name"])
def test_bad_replies_give_their_error(v: Dict[str, Any]) -> None:
    with pytest.raises(WireError) as caught:
        decode_reply(bytes.fromhex(v["hex"]), end_of_input=v.get("end_of_input", True))
    assert caught.value.code == v["error"]["code"]


@pytest.mark.parametrize("v", load("draw"), ids=lambda v: v["name"])
def test_draw_vectors(v: Dict[str, Any]) -> None:
    entries = [Entry(int(u), t) for u, t in v["entries"]]
    seed = bytes.fromhex(v["seed"])
    list_hash, winners = draw.winners(entries, seed, v["winner_count"])
    assert list_hash == v["entry_list_hash"]
    assert [str(w) for w in winners] == v["winners"]
    stream = draw.random_u64s(seed, bytes.fromhex(list_hash))
    assert [str(next(stream)) for _ in v["random_u64"]] == v["random_u64"]
    for export in (v["export_csv"], v["export_ndjson"]):
        result = draw.verify(export, v["seed"], v["winner_count"], commitment=v["commitment"],
                             published_hash=v["entry_list_hash"], published_winners=[int(w) for w in v["winners"]])
        assert result.ok, result.lines


def test_verify_catches_a_tampered_export() -> None:
    v = next(v for v in load("draw") if v["name"] == "thousand-entries")
    tampered = v["export_csv"].replace("\n7919,", "\n7918,", 1)
    result = draw.verify(tampered, v["seed"], v["winner_count"], published_hash=v["entry_list_hash"])
    assert not result.ok and "entry-list hash: DOES NOT MATCH" in result.lines
