"""The built-in ``jsonl`` uplink: every reading and event, appended to a JSON-lines file.

A feed for whatever reads files (a log shipper, a nightly import, a test), and the
smallest complete uplink: it takes the outbox in order, appends one line per item with
the item's outbox ``id``, makes the file durable (fsync) and only then acknowledges. A
crash between the write and the acknowledgement re-offers items already written; their
ids are at or below the last id in the file, so they are skipped, not written twice::

    uplink:
      protocol: jsonl
      path: /var/lib/meterhub/feed.jsonl    # relative paths: to the working directory
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from typing import Any

from meterhub.api import Terminal
from meterhub.hookspecs import hookimpl
from meterhub.jsonout import dumps, event_to_dict, reading_to_dict
from meterhub.model import OutboxItem, Reading, UplinkConfig

#: Items taken from the outbox per write (one fsync each batch).
BATCH = 500
#: How long an idle uplink waits for news before it looks at the outbox again anyway.
IDLE_POLL_S = 5.0
#: The tail of the file read back to find the last id written (a line is far shorter).
TAIL_BYTES = 64 * 1024


def last_id(path: str) -> int:
    """The highest outbox id in the file's last complete lines; 0 for a new file."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - TAIL_BYTES, 0))
            tail = fh.read()
    except FileNotFoundError:
        return 0
    best = 0
    for line in tail.splitlines():
        try:
            best = max(best, int(json.loads(line)["id"]))
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash, or the first, partial line of the tail
    return best


def item_line(item: OutboxItem) -> str:
    body: Mapping[str, Any]
    if isinstance(item.item, Reading):
        body = {"id": item.id, "kind": "reading", **reading_to_dict(item.item)}
    else:
        body = {"id": item.id, "kind": "event", **event_to_dict(item.item)}
    return dumps(body) + "\n"


def _append(path: str, lines: list[str]) -> None:
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())


class JsonlUplink:
    """A running ``jsonl`` uplink (:class:`meterhub.api.Uplink`)."""

    def __init__(self, path: str, terminal: Terminal) -> None:
        self.path = path
        self.terminal = terminal

    async def run(self) -> None:
        written = await asyncio.to_thread(last_id, self.path)
        while True:
            items = await self.terminal.outbox(BATCH)
            if not items:
                await self.terminal.wait_outbox(IDLE_POLL_S)
                continue
            fresh = [item_line(i) for i in items if i.id > written]
            if fresh:
                await asyncio.to_thread(_append, self.path, fresh)
            written = max(written, *(i.id for i in items))
            await self.terminal.ack([i.id for i in items])


class JsonlUplinkDriver:
    """Makes ``jsonl`` uplinks (:class:`meterhub.api.UplinkDriver`)."""

    name = "jsonl"
    description = "appends every reading and event to a JSON-lines file (ids make re-delivery harmless)"

    def validate(self, config: UplinkConfig) -> list[tuple[str, str]]:
        problems = []
        for key in config.options:
            if key != "path":
                problems.append((key, "unknown key (the jsonl uplink takes path:)"))
        path = config.options.get("path")
        if path is None:
            problems.append(("", "missing required key path (the file to append to)"))
        elif not isinstance(path, str) or not path.strip():
            problems.append(("path", "must be a file path"))
        elif os.path.isdir(path):
            problems.append(("path", f"{path} is a directory; give a file"))
        return problems

    def create(self, config: UplinkConfig, terminal: Terminal) -> JsonlUplink:
        return JsonlUplink(str(config.options["path"]), terminal)


@hookimpl
def meterhub_register_uplinks(register: Any) -> None:
    register(JsonlUplinkDriver())
