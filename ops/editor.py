"""``patchlog edit``: a document's head in the user's editor, the saved difference submitted.

Like ``git commit`` or ``kubectl edit``: ``$VISUAL``, else ``$EDITOR``, else ``vi`` opens a
temporary file holding the head; on save the difference is submitted on that head and
the command waits for its outcome. A conflict (or ``stale``) shows the message, keeps
the user's version in a file, and reopens the editor with the new head.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import msgspec

from patchlog.projections.edit import difference, lost_race
from patchlog.projections.load import Loaded, load_content
from patchlog.streams.client import Client
from patchlog.streams.errors import PatchlogError
from patchlog.streams.schema import Outcome, OutcomeStatus

__all__ = ["EditorFailed", "Session", "editor_command", "file_name", "lines_of", "text_of"]


class EditorFailed(PatchlogError):
    """The editor could not be started or exited with a failure status: nothing is sent."""


def editor_command(env: dict[str, str]) -> list[str]:
    """The editor's command words: ``$VISUAL``, else ``$EDITOR``, else ``vi``."""
    chosen = env.get("VISUAL") or env.get("EDITOR") or "vi"
    return shlex.split(chosen)


def file_name(doc: str) -> str:
    """A file name for ``doc`` that keeps its extension (for the editor's syntax mode)."""
    last = doc.rsplit("/", 1)[-1]
    return re.sub(r"[^A-Za-z0-9._-]", "_", last)[:80] or "document"


def text_of(lines: Sequence[str]) -> str:
    """A document's bytes as text: each line followed by ``\\n``."""
    return "".join(line + "\n" for line in lines)


def lines_of(text: str) -> list[str]:
    """The lines of a saved file; CRLF is read as LF and a missing last newline is fine."""
    text = text.replace("\r\n", "\n")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if text else []


def run_editor(command: list[str], path: Path) -> None:
    """Open ``path`` in the editor and wait for it to exit (a person's pace: unbounded).

    Raises ``EditorFailed`` if it cannot be started or exits with a non-zero status.
    """
    try:
        done = subprocess.run([*command, str(path)], check=False)  # noqa: S603
    except OSError as err:
        raise EditorFailed(
            f"editor {shlex.join(command)!r} could not be started: {err.strerror}; "
            "set VISUAL or EDITOR"
        ) from None
    if done.returncode != 0:
        raise EditorFailed(
            f"editor {shlex.join(command)!r} exited with status {done.returncode}; "
            "nothing was submitted"
        )


class Session:
    """One ``patchlog edit`` of one document (``run`` drives its rounds)."""

    def __init__(
        self,
        client: Client,
        doc: str,
        *,
        command: list[str],
        folder: Path,
        author: str | None,
        timeout: float,
        say: Callable[[str], None],
    ) -> None:
        self.client = client
        self.doc = doc
        self.command = command
        self.path = folder / file_name(doc)
        self.author = author
        self.timeout = timeout
        self.say = say
        self._loaded: Loaded | None = None

    async def load(self) -> Loaded:
        """The head, caught up from the previous round's."""
        self._loaded = await load_content(
            self.client.redis, self.client.keys, self.doc, known=self._loaded
        )
        return self._loaded

    def edit(self, loaded: Loaded) -> list[str]:
        """Write the head to the file, run the editor, read the saved lines back."""
        self.path.write_text(text_of(loaded.lines), encoding="utf-8")
        run_editor(self.command, self.path)
        try:
            return lines_of(self.path.read_text(encoding="utf-8"))
        except UnicodeDecodeError as err:
            raise EditorFailed(
                f"{self.path}: not UTF-8 at byte {err.start}; nothing was submitted"
            ) from None

    async def send(self, loaded: Loaded, lines: list[str]) -> Outcome | None:
        """Submit the difference on the loaded head and wait for its outcome; ``None``
        if there is no difference."""
        ops = difference(loaded.lines, lines)
        if not ops:
            return None
        submitted = await self.client.submit(self.doc, loaded.rev, ops=ops, author=self.author)
        return await self.client.wait(submitted, self.timeout)

    def keep(self, lines: list[str], attempt: int) -> Path:
        """Keep a refused version beside the session's folder, for the user to reuse."""
        name = f"patchlog-edit-{os.getpid()}-{attempt}-{self.path.name}"
        kept = Path(tempfile.gettempdir()) / name
        kept.write_text(text_of(lines), encoding="utf-8")
        return kept

    async def run(self, reopens: int) -> Outcome | None:
        """Edit, submit, and after a conflict reopen with the new head, at most
        ``reopens`` times; the last outcome, or ``None`` if the file was saved unchanged.
        """
        attempt = 0
        while True:
            attempt += 1
            loaded = await self.load()
            lines = await asyncio.to_thread(self.edit, loaded)
            outcome = await self.send(loaded, lines)
            if outcome is None or not raced(outcome) or attempt > reopens:
                return outcome
            kept = self.keep(lines, attempt)
            self.say(
                f"patchlog: {outcome.code}: {outcome.message}\n"
                f"patchlog: your version is kept in {kept}; reopening the editor with the "
                f"new head ({attempt} of {reopens} reopens)"
            )


def raced(outcome: Outcome) -> bool:
    """Whether to reopen: another writer changed what this edit changes (a ``noop`` is
    not reopened: the document already reads as the user wanted)."""
    return lost_race(outcome) and outcome.status is not OutcomeStatus.NOOP


def outcome_json(outcome: Outcome) -> str:
    """The outcome as one JSON line, as ``submit --wait`` prints it."""
    return msgspec.json.encode(outcome).decode()
