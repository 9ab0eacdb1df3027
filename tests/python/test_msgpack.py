"""hubcast end-to-end over the MessagePack hub protocol with signalrcore 1.0.2.

signalrcore handshakes with {"protocol": "messagepack", "version": 1} in a
binary frame, sends Invocations as 5-element arrays (no stream ids) with its
HTTP headers as invocation headers, and reads Invocations as 6-element
arrays. Values are compared with strict_json, so types must match too:
1 != 1.0 != True, as MessagePack keeps them apart.

Every binary frame the client parses is kept and decoded here as well, so the
wire shape of the Completions (resultKind 1 error, 2 void) is checked too.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any

import msgpack
import pytest
from signalrcore.hub_connection_builder import HubConnectionBuilder
from signalrcore.protocol.messagepack_protocol import MessagePackHubProtocol

from conftest import Client, strict_json, wait_for

# The first argument of each event names the case. Integers sit on MessagePack's
# encoding boundaries; strings and containers on str8/16/32, array16, map16.
VALUE_CASES: dict[str, list] = {
    "nested objects": [
        {
            "id": "job-42",
            "progress": {"percent": 99.5, "steps": [1, 2, {"sub": "x"}], "done": False, "eta": None},
            "meta": {"nested": {"deeper": {"deepest": {"text": "Grüße, 世界 — ✓ 🚀"}}}},
            "ключ": {"🔑": "値"},
        },
        [{"a": [{"b": [{"c": {}}]}]}],
    ],
    "arrays": [[1, "two", 3.5, None, True, False, [], {}, [[["deep"]]]], [i * 3 for i in range(20)]],
    "integers": [0, 1, 42, 127, 128, 255, 256, 65535, 65536, 4294967295, 4294967296],
    "negative numbers": [-1, -31, -32, -33, -127, -128, -129, -32768, -32769,
                         -2147483648, -2147483649, -0.5, -12.25, -1e-9],
    "floats": [0.1, 0.5, 99.5, 3.141592653589793, 1e-7, 6.02e23, 1.7976931348623157e308, 5e-324, 2.5e-308, 985.6906946328695],
    # JSON numbers with a fraction or exponent are floats even when integral.
    "integral floats": [2.0, -3.0, 1000.0, 1e300],
    "unicode strings": [
        "Grüße, 世界 — ✓",
        "astral: 🚀🎉 𝄞 👩‍👩‍👧",
        "naïve café ☕ 日本語 \"quoted\" back\\slash\nnewline\ttab",
        "control \u0001\u001f and nul \u0000 inside",
        "",
        "x" * 31,
        "é" * 200,
        "語" * 30_000,
    ],
    "booleans and null": [True, False, None, [True, None, False], {"t": True, "f": False, "n": None}],
    "large integers within 2^53": [2**53 - 1, -(2**53 - 1), 2**53 - 2, 10**15, -(10**15), 2**40],
    "empty containers": [[], {}, {"empty": {}, "none": []}, [[], {}]],
    "big map": [{f"k{i}": (f"v{i}" if i % 2 else i) for i in range(20)}],
}


def unique_group(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def split_length_prefixed(frame: bytes) -> list[bytes]:
    """The VarInt-length-prefixed payloads of one frame."""
    payloads, offset = [], 0
    while offset < len(frame):
        length = shift = 0
        while True:
            byte = frame[offset]
            offset += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        payloads.append(frame[offset:offset + length])
        offset += length
    return payloads


class MessagePackClient(Client):
    """conftest's Client over the MessagePack protocol; `.frames` keeps what it parsed."""

    def __init__(self, url: str, skip_negotiation: bool = False):
        options = {"skip_negotiation": True} if skip_negotiation else None
        protocol = MessagePackHubProtocol()
        # Wrapped on the instance: the transport picks binary frames by the
        # protocol's exact type, so no subclass.
        self.frames: list[bytes] = []
        parse = protocol.parse_messages

        def recording_parse(raw):
            self.frames.append(bytes(raw))
            return parse(raw)

        protocol.parse_messages = recording_parse
        self.hub = (HubConnectionBuilder()
                    .with_url(url, options=options)
                    .with_hub_protocol(protocol)
                    .build())
        self.opened = threading.Event()
        self.closed = threading.Event()
        self.errors: list = []
        self.completions: dict[str, Any] = {}
        self.hub.on_open(self.opened.set)
        self.hub.on_close(self.closed.set)
        self.hub.on_error(self._on_error)

    def records(self) -> list:
        """Every record received after the handshake, decoded."""
        out = []
        for frame in list(self.frames):
            for payload in split_length_prefixed(frame):
                out.append(msgpack.unpackb(payload))
        return out

    def wire(self) -> str:
        try:
            return "decoded records:\n" + "\n".join(repr(r) for r in self.records())
        except Exception as exc:  # noqa: BLE001 - diagnostics only
            return f"undecodable frames ({exc!r}): {[f.hex() for f in self.frames]}"


@pytest.fixture
def mp_clients():
    made: list[MessagePackClient] = []

    def make(url: str, skip_negotiation: bool = False) -> MessagePackClient:
        c = MessagePackClient(url, skip_negotiation=skip_negotiation)
        made.append(c)
        return c.start()

    yield make
    for c in made:
        c.stop()


def wait_events(client: MessagePackClient, recorder, n: int) -> list[list]:
    """As recorder.wait_for_count, with the decoded frames in the failure message."""
    wait_for(lambda: len(recorder.events) >= n, 5, f"{n} '{recorder.target}' event(s)",
             detail=lambda: f"received so far: {recorder.events!r}\n{client.wire()}")
    return list(recorder.events)


def completion_for(client: MessagePackClient, invocation_id: str) -> list:
    return wait_for(
        lambda: next((r for r in client.records() if r[0] == 3 and r[2] == invocation_id), None),
        timeout=5, what=f"the Completion record of {invocation_id}", detail=client.wire)


def test_messagepack_client_receives_published_values(server, mp_clients):
    client = mp_clients(server.hub_url("/hubs/tasks"))
    values = client.on("Values")
    group = unique_group("py-mp-values")

    joined = client.invoke("JoinGroup", [group])
    assert not getattr(joined, "error", None), joined.error
    # Void: [3, headers, id, 2].
    raw = completion_for(client, joined.invocation_id)
    assert len(raw) == 4 and raw[3] == 2, raw

    for i, (name, args) in enumerate(VALUE_CASES.items()):
        # Every other body as raw UTF-8 (requests' json= escapes non-ASCII as \\u...).
        res = server.publish_to_group(
            "tasks", group, {"target": "Values", "arguments": [name, *args]}, raw_utf8=bool(i % 2))
        assert res.status_code == 202, res.text
        assert res.json().get("members") == 1, res.text

    events = wait_events(client, values, len(VALUE_CASES))
    got = {e[0]: e[1:] for e in events if e}
    mismatches = [
        f"{name}: got {strict_json(got.get(name))}, published {strict_json(args)}"
        for name, args in VALUE_CASES.items()
        if strict_json(got.get(name)) != strict_json(args)
    ]
    assert mismatches == [], "\n".join(mismatches)
    assert len(events) == len(VALUE_CASES), events
    assert client.errors == []


def test_messagepack_events_are_six_element_invocations(server, mp_clients):
    # Read from the frames themselves: signalrcore drops a frame whose
    # Invocation lacks the streamIds element (it reads raw[5]).
    client = mp_clients(server.hub_url("/hubs/tasks"))
    group = unique_group("py-mp-wire")
    assert not getattr(client.invoke("JoinGroup", [group]), "error", None)
    res = server.publish_to_group("tasks", group, {"target": "Shape", "arguments": [1, "two", None]})
    assert res.status_code == 202, res.text
    raw = wait_for(
        lambda: next((r for r in client.records() if r[0] == 1 and r[3] == "Shape"), None),
        timeout=5, what="the Invocation record of 'Shape'", detail=client.wire)
    assert len(raw) == 6, f"[1, headers, invocationId, target, arguments, streamIds] expected, got {raw!r}"
    assert isinstance(raw[1], dict) and raw[2] is None and raw[4] == [1, "two", None] and raw[5] == [], raw


def test_messagepack_leave_group_stops_delivery(server, mp_clients):
    client = mp_clients(server.hub_url("/hubs/spend"))
    events = client.on("SpendUpdated")
    left, kept = unique_group("py-mp-left"), unique_group("py-mp-kept")
    for group in (left, kept):
        assert not getattr(client.invoke("JoinGroup", [group]), "error", None)

    assert server.publish_to_group(
        "spend", left, {"target": "SpendUpdated", "arguments": ["before leave"]}).status_code == 202
    wait_events(client, events, 1)

    left_completion = client.invoke("LeaveGroup", [left])
    assert not getattr(left_completion, "error", None), left_completion.error
    res = server.publish_to_group("spend", left, {"target": "SpendUpdated", "arguments": ["after leave"]})
    assert res.status_code == 202 and res.json().get("members") == 0, res.text
    # The marker comes after; once it is in, "after leave" would have been too.
    server.publish_to_group("spend", kept, {"target": "SpendUpdated", "arguments": ["marker"]})
    assert wait_events(client, events, 2) == [["before leave"], ["marker"]]


def test_messagepack_reply_round_trips_types(server, mp_clients):
    # UpdatePreferences(prefs) answers the caller with PreferencesUpdated(prefs):
    # MessagePack in, MessagePack out, every type kept.
    client = mp_clients(server.hub_url("/hubs/notifications"))
    replies = client.on("PreferencesUpdated")
    prefs = {
        "email": True, "sms": False, "digest": "daily",
        "quietHours": {"from": 22, "to": 7, "zone": "Europe/Zürich"},
        "channels": ["push", "mail", "ウェブ"],
        "weight": 0.75, "whole": 2.0, "note": None,
        "big": 2**53 - 1, "negative": -40, "one": 1,
        "deep": {"list": [[], {}, [1, [2, [3]]]]},
    }
    completion = client.invoke("UpdatePreferences", [prefs])
    assert not getattr(completion, "error", None), completion.error
    assert strict_json(wait_events(client, replies, 1)) == strict_json([[prefs]])


def test_messagepack_invocation_errors_are_reported(server, mp_clients):
    client = mp_clients(server.hub_url("/hubs/webhooks"))

    unknown = client.invoke("Nope", [])
    assert unknown.error == "Unknown hub method 'Nope'", vars(unknown)
    raw = completion_for(client, unknown.invocation_id)
    assert raw[3:] == [1, "Unknown hub method 'Nope'"] and len(raw) == 5, raw

    wrong = client.invoke("JoinGroup", [])
    assert wrong.error == ("Failed to invoke 'JoinGroup' due to an error on the server. "
                           "InvalidDataException: Invocation provides 0 argument(s) but target expects 1."), vars(wrong)
    assert completion_for(client, wrong.invocation_id)[3] == 1

    # Both went to on_error, and the connection is still usable afterwards.
    assert [getattr(e, "invocation_id", None) for e in client.errors] == [unknown.invocation_id, wrong.invocation_id]
    events = client.on("WebhookDelivered")
    group = unique_group("py-mp-after-error")
    assert not getattr(client.invoke("JoinGroup", [group]), "error", None)
    res = server.publish_to_group(
        "webhooks", group, {"target": "WebhookDelivered", "arguments": [1, "ok"]})
    assert res.status_code == 202, res.text
    assert strict_json(wait_events(client, events, 1)) == strict_json([[1, "ok"]])
