"""``submit --dry-run``: decide a patch against the current head without submitting it."""

from __future__ import annotations

import json

import msgspec

from patchlog.consumers.normalize import normalize_entry
from patchlog.projections.diff import render_diff
from patchlog.projections.fold import plan
from patchlog.projections.load import later_of, load_content
from patchlog.projections.patch import to_ops
from patchlog.streams.client import Client
from patchlog.streams.errors import Rejected
from patchlog.streams.log import read_head, read_strict, revisions_of
from patchlog.streams.settings import Settings

__all__ = ["dry_run"]


async def dry_run(
    client: Client, settings: Settings, doc: str, base: int, ops_json: str | None, diff: str | None
) -> tuple[str, bool]:
    """The unified diff the patch would make now (or its rejection), and whether it is
    accepted. Nothing is written."""
    fields = {b"doc": doc.encode(), b"base": str(base).encode()}
    if ops_json is not None:
        fields[b"ops"] = ops_json.encode()
    if diff is not None:
        fields[b"diff"] = diff.encode()
    try:
        patch = normalize_entry(("0-0", fields), settings)
        head = await read_head(client.redis, client.keys, doc)
        strict = await read_strict(client.redis, client.keys, [doc], settings.strict)
        loaded = await load_content(client.redis, client.keys, doc, head)
        later = []
        if 0 <= patch.base < head.rev:
            later = [
                later_of(r)
                for r in await revisions_of(
                    client.redis, client.keys, doc, patch.base + 1, head.rev
                )
            ]
        planned = plan(
            loaded.lines,
            head.rev,
            later,
            base=patch.base,
            splices=patch.splices,
            diff=patch.diff,
            strict=strict[doc],
            limits=settings.limits,
        )
    except Rejected as err:
        return json.dumps(
            {"status": "rejected", "code": err.code.value, "message": err.message}
        ) + "\n", False
    if planned is None:
        return f"noop: {doc} at revision {head.rev} would not change\n", True
    header = f"# {doc}: revision {head.rev} -> {head.rev + 1} (not submitted)\n"
    if patch.base < head.rev:
        ops = msgspec.json.encode(to_ops(planned.splices)).decode()
        header += (
            f"# rebased from base {patch.base} onto the head {head.rev}; as ops on the "
            f"head: {ops}\n"
        )
    return header + render_diff(loaded.lines, planned.content, doc), True
