"""hubcast end-to-end with the Python signalrcore 1.0.2 client.

signalrcore negotiates without negotiateVersion (so the server must answer
version 0 and accept ?id=<connectionId>), handshakes with "version": 0 and
always sends invocation headers; these tests cover that path.
"""

from __future__ import annotations

import uuid

from conftest import strict_json, wait_for

RICH_ARGUMENTS = [
    "t1",
    50,
    "half",
    {
        "id": "job-7",
        "progress": {"percent": 12.75, "steps": [1, 2, {"sub": None}], "done": False},
        "labels": {"de": "Grüße", "ja": "日本語", "emoji": "🚀✓"},
        "empty": {},
        "none": [],
    },
    "naïve café ☕ 🎉 \"quoted\" back\\slash\nnewline",
    -3,
    True,
    None,
]


def unique_group(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def test_negotiated_connection_receives_group_event(server, clients):
    client = clients(server.hub_url("/hubs/tasks"))
    progress = client.on("TaskProgress")
    group = unique_group("py-neg")

    completion = client.invoke("JoinGroup", [group])
    assert not getattr(completion, "error", None), completion.error

    res = server.publish_to_group(
        "tasks", group, {"target": "TaskProgress", "arguments": RICH_ARGUMENTS})
    assert res.status_code == 202, res.text
    assert res.json().get("members") == 1, res.text

    events = progress.wait_for_count(1)
    assert len(events) == 1
    assert strict_json(events[0]) == strict_json(RICH_ARGUMENTS)
    assert client.errors == []


def test_skip_negotiation_receives_group_event(server, clients):
    client = clients(server.hub_url("/hubs/image-generation"), skip_negotiation=True)
    done = client.on("ImageGenerationCompleted")
    group = unique_group("py-skip")

    # Fire-and-forget send, then wait until the server shows the membership.
    client.hub.send("JoinGroup", [group])
    wait_for(lambda: server.group_members("image-generation", group) == 1, timeout=5,
             what=f"group {group} to have one member")

    args = ["img-9", {"url": "https://example.invalid/a.png", "size": [512, 512]}, "ß✓"]
    # Raw UTF-8 body this time (requests' json= escapes non-ASCII as \\u...).
    res = server.publish_to_group(
        "image-generation", group,
        {"target": "ImageGenerationCompleted", "arguments": args}, raw_utf8=True)
    assert res.status_code == 202, res.text

    events = done.wait_for_count(1)
    assert strict_json(events) == strict_json([args])


def test_group_isolation(server, clients):
    member_a = clients(server.hub_url("/hubs/notifications"))
    member_b = clients(server.hub_url("/hubs/notifications"))
    events_a = member_a.on("Notify")
    events_b = member_b.on("Notify")
    group_a, group_b = unique_group("py-A"), unique_group("py-B")
    member_a.invoke("JoinGroup", [group_a])
    member_b.invoke("JoinGroup", [group_b])

    for group, text in ((group_b, "for B"), (group_a, "for A")):
        res = server.publish_to_group(
            "notifications", group, {"target": "Notify", "arguments": [text]})
        assert res.status_code == 202, res.text

    assert events_b.wait_for_count(1) == [["for B"]]
    assert events_a.wait_for_count(1) == [["for A"]]


def test_unknown_method_returns_completion_error(server, clients):
    client = clients(server.hub_url("/hubs/webhooks"))
    completion = client.invoke("Nope", [])
    assert "Unknown hub method 'Nope'" in (completion.error or ""), vars(completion)

    # The connection is still usable afterwards.
    events = client.on("WebhookDelivered")
    group = unique_group("py-after-error")
    client.invoke("JoinGroup", [group])
    res = server.publish_to_group(
        "webhooks", group, {"target": "WebhookDelivered", "arguments": [1, "ok"]})
    assert res.status_code == 202, res.text
    assert strict_json(events.wait_for_count(1)) == strict_json([[1, "ok"]])
