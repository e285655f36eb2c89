"""The embedded server's durability and its data folder, and reading a server's
persistence: on both kinds of server, in this process."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from patchlog.streams.connection import Persistence, connect, read_persistence
from patchlog.streams.errors import DataDirLocked
from patchlog.streams.server import EmbeddedServer
from patchlog.streams.settings import Fsync, Settings
from tests.integration.helpers import KINDS, binary_for, free_port


@pytest.mark.parametrize("kind", KINDS)
async def test_the_default_server_fsyncs_every_write(tmp_path: Path, kind: str) -> None:
    """Started with the defaults, the embedded server runs ``appendfsync always``."""
    assert Settings().fsync is Fsync.ALWAYS
    srv = EmbeddedServer(tmp_path, port=free_port(), binary=binary_for(kind))
    await srv.start()
    redis = connect(Settings(), srv.url)
    try:
        assert await redis.config_get("appendonly", "appendfsync") == {
            "appendonly": "yes",
            "appendfsync": "always",
        }
        assert (await read_persistence(redis)).risk() is None
    finally:
        await redis.aclose()
        await srv.stop()


async def test_a_data_folder_takes_one_server(tmp_path: Path) -> None:
    """A second server on a folder in use fails at once naming the folder and the pid
    holding it, starts nothing, and can start once the first one stopped."""
    first = EmbeddedServer(tmp_path / "data", port=free_port())
    second = EmbeddedServer(tmp_path / "data", port=free_port())
    await first.start()
    try:
        with pytest.raises(DataDirLocked) as raised:
            await second.start()
        assert raised.value.pid == os.getpid()
        assert str(first.data_dir) in str(raised.value)
        assert f"process {os.getpid()}" in str(raised.value)
        assert second.process is None
    finally:
        await first.stop()
    await second.start()  # the lock went with the first server
    await second.stop()


@pytest.mark.parametrize("kind", KINDS)
async def test_weaker_persistence_is_named_with_what_it_loses(tmp_path: Path, kind: str) -> None:
    """everysec, appendonly no, and a CONFIG that cannot be read are each reported with
    the setting and what a crash loses."""
    srv = EmbeddedServer(tmp_path, port=free_port(), binary=binary_for(kind), fsync=Fsync.EVERYSEC)
    await srv.start()
    redis = connect(Settings(), srv.url)
    try:
        found = await read_persistence(redis)
        assert found == Persistence(appendonly=True, appendfsync="everysec")
        setting, loss = found.risk() or ("", "")
        assert setting == "appendfsync everysec"
        assert "about the last 1-2 s" in loss
        # A user not allowed CONFIG (as on many managed services): AOF state from INFO.
        await redis.execute_command(
            "ACL", "SETUSER", "limited", "on", ">pw", "~*", "&*", "+@all", "-config"
        )
        limited = connect(Settings(), f"redis://limited:pw@127.0.0.1:{srv.port}/0")
        try:
            unknown = await read_persistence(limited)
        finally:
            await limited.aclose()
        assert (unknown.appendonly, unknown.appendfsync) == (True, None)
        assert (unknown.risk() or ("",))[0] == "appendonly/appendfsync unknown"
        await redis.config_set("appendonly", "no")
        setting, loss = (await read_persistence(redis)).risk() or ("", "")
        assert setting == "appendonly no"
        assert "everything written since its last RDB snapshot" in loss
    finally:
        await redis.aclose()
        await srv.stop()
