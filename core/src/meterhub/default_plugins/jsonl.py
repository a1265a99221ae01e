"""The built-in ``jsonl`` uplink: every reading and event, appended to a JSON-lines file.

A feed for whatever reads files (a log shipper, a nightly import, a test), and the
smallest complete uplink: it takes the outbox in order, appends one line per item with
the item's outbox ``id``, makes the file durable (fsync) and only then acknowledges. A
crash between the write and the acknowledgement re-offers items already written: an
item whose very line (same id, same content) ends the file already is skipped, not
written twice. The content is compared, not only the id, so a feed that outlives its
store (a new database starts its ids at 1 again) gets every new item, with a warning. A
crash in the middle of a write leaves a last line cut short: it is cut off when the uplink
starts (its item was not acknowledged, so it is offered again and written whole). The
file and, when it is new, its folder are fsynced before anything is acknowledged.

Each line is ``{"id": ..., "kind": "reading", <the reading>}`` or ``{"id": ..., "kind":
"event", "event": <the event's kind>, <the rest of the event>}``::

    uplink:
      protocol: jsonl
      path: /var/lib/meterhub/feed.jsonl    # relative paths: to the working directory
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from meterhub.hookspecs import hookimpl

if TYPE_CHECKING:
    from meterhub.api import Terminal
    from meterhub.model import OutboxItem, UplinkConfig

# asyncio, the model and the JSON writer are imported where they are used: loading the
# built-in plugins (every start of the command line) does not pay for a running uplink.

log = logging.getLogger(__name__)

#: Items taken from the outbox per write (one fsync each batch).
BATCH = 500
#: How long an idle uplink waits for news before it looks at the outbox again anyway.
IDLE_POLL_S = 5.0
#: The tail of the file read back to find the lines written but not acknowledged before a
#: crash: at most one batch, and a line is well under 2 KiB.
TAIL_BYTES = BATCH * 2048


def tail_lines(path: str) -> dict[int, str]:
    """The file's last complete lines by their outbox id (empty for a new file)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(size - TAIL_BYTES, 0))
            tail = fh.read()
    except FileNotFoundError:
        return {}
    found: dict[int, str] = {}
    for raw in tail.splitlines(keepends=True):
        try:
            line = raw.decode("utf-8")
            found[int(json.loads(line)["id"])] = line
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by a crash, or the first, partial line of the tail
    return found


def last_id(path: str) -> int:
    """The highest outbox id in the file's last complete lines; 0 for a new file."""
    return max(tail_lines(path), default=0)


def drop_cut_line(path: str) -> int:
    """Cut off a last line that a crash in the middle of a write left without its end of
    line (its item was never acknowledged, so it is offered again); bytes cut off."""
    try:
        with open(path, "r+b") as fh:
            size = fh.seek(0, os.SEEK_END)
            end = size
            while end > 0:
                start = max(end - TAIL_BYTES, 0)
                fh.seek(start)
                newline = fh.read(end - start).rfind(b"\n")
                if newline >= 0:
                    end = start + newline + 1
                    break
                end = start
            if end < size:
                fh.truncate(end)
                os.fsync(fh.fileno())
            return size - end
    except FileNotFoundError:
        return 0


def item_line(item: OutboxItem) -> str:
    from meterhub.jsonout import dumps, event_to_dict, reading_to_dict
    from meterhub.model import Reading

    body: Mapping[str, Any]
    if isinstance(item.item, Reading):
        body = {"id": item.id, "kind": "reading", **reading_to_dict(item.item)}
    else:
        # "kind" says what the line is; the event's own kind goes under "event"
        event = event_to_dict(item.item)
        body = {"id": item.id, "kind": "event", "event": event.pop("kind"), **event}
    return dumps(body) + "\n"


def _append(path: str, lines: list[str]) -> None:
    new = not os.path.exists(path)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
    if new:  # the file's name is in its folder: make that durable too
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


class JsonlUplink:
    """A running ``jsonl`` uplink (:class:`meterhub.api.Uplink`)."""

    def __init__(self, path: str, terminal: Terminal) -> None:
        self.path = path
        self.terminal = terminal

    async def run(self) -> None:
        import asyncio

        await asyncio.to_thread(drop_cut_line, self.path)  # before anything is appended to it
        # lines written before a crash whose items may come again; only the first batch can
        written = await asyncio.to_thread(tail_lines, self.path)
        while True:
            items = await self.terminal.outbox(BATCH)
            if not items:
                await self.terminal.wait_outbox(IDLE_POLL_S)
                continue
            lines = [(i, item_line(i)) for i in items]
            fresh = [line for i, line in lines if written.get(i.id) != line]
            if written and any(i.id in written and written[i.id] != line for i, line in lines):
                log.warning("%s: ids already in the file come with other content: the store is not the one the "
                            "file was written from; writing its items all the same", self.path)
            written = {}
            if fresh:
                await asyncio.to_thread(_append, self.path, fresh)
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
