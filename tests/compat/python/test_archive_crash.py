"""Crash safety of archive and restore: the server is stopped at each named step (a build with
the `fault-injection` feature, given DAYTONA_FAULT=<step>:exit) and at random moments (SIGKILL),
restarted, and then every sandbox must be stopped with its files or archived without them,
nothing half-written may be left in the staging directory or object storage, and a start must
bring the files back."""

import os
import random
import signal
import threading
import time

import pytest
from conftest import client_for as client
from daytona import Daytona

from daytona_server import Server

FAULT_BIN = os.environ.get("DAYTONA_FAULT_BIN")

ARCHIVE_STEPS = ["archive.packed", "archive.uploaded", "archive.dropped"]
RESTORE_STEPS = ["restore.downloaded", "restore.unpacked"]


@pytest.fixture
def fault_server():
    if not FAULT_BIN or not os.path.exists(FAULT_BIN):
        pytest.skip("SKIPPED: DAYTONA_FAULT_BIN does not name a daytona built with --features fault-injection")
    instance = Server(binary=FAULT_BIN)
    instance.start()
    yield instance
    instance.stop()
    instance.remove_data()


def restart(server, env=None):
    if server.process is not None:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGKILL)
        server.process.wait()
        server.process = None
    server.start(env)


def stored_archives(server) -> list[str]:
    root = os.path.join(server.data_dir, "objects", "daytona-archives")
    return sorted(
        os.path.relpath(os.path.join(dirpath, name), root)
        for dirpath, _, names in os.walk(root)
        for name in names
    )


def staging_files(server) -> list[str]:
    staging = os.path.join(server.data_dir, "staging")
    return os.listdir(staging) if os.path.isdir(staging) else []


def has_local_layer(server, sandbox_id) -> bool:
    root = os.path.join(server.data_dir, "sandboxes", sandbox_id)
    return any(os.path.exists(os.path.join(root, name)) for name in ("disk.img", "upper"))


def settled(daytona: Daytona, sandbox_id: str, timeout: float = 30):
    """Waits until the sandbox leaves archiving and restoring, and returns it."""
    deadline = time.monotonic() + timeout
    while True:
        sandbox = daytona.get(sandbox_id)
        if sandbox.state not in ("archiving", "restoring") or time.monotonic() > deadline:
            return sandbox
        time.sleep(0.2)


def assert_consistent(server, sandbox):
    """A stopped sandbox has its files and no archive; an archived one the reverse."""
    assert sandbox.state in ("stopped", "archived"), sandbox.state
    assert staging_files(server) == []
    if sandbox.state == "stopped":
        assert has_local_layer(server, sandbox.id)
        assert stored_archives(server) == []
    else:
        assert not has_local_layer(server, sandbox.id)
        assert len(stored_archives(server)) == 1


def stopped_sandbox_with_file(daytona: Daytona, content: bytes):
    sandbox = daytona.create()
    sandbox.fs.upload_file(content, "/home/daytona/kept.bin")
    sandbox.stop()
    return sandbox


def assert_restarts_with_file(daytona: Daytona, sandbox_id: str, content: bytes):
    sandbox = daytona.get(sandbox_id)
    sandbox.start()
    assert sandbox.state == "started"
    assert sandbox.fs.download_file("/home/daytona/kept.bin") == content
    daytona.delete(sandbox)


def request_quietly(call):
    """Runs an SDK call whose server may die under it."""
    try:
        call()
    except Exception:  # noqa: BLE001 - the connection drops when the server exits
        pass


@pytest.mark.parametrize("step", ARCHIVE_STEPS)
def test_crash_during_archive(fault_server, step):
    restart(fault_server, {"DAYTONA_FAULT": f"{step}:exit"})
    daytona = client(fault_server)
    content = os.urandom(200_000)
    sandbox = stopped_sandbox_with_file(daytona, content)

    request_quietly(sandbox.archive)
    assert fault_server.process.wait(timeout=60) == 86

    restart(fault_server)
    daytona = client(fault_server)
    assert_consistent(fault_server, settled(daytona, sandbox.id))
    assert_restarts_with_file(daytona, sandbox.id, content)
    assert stored_archives(fault_server) == []


@pytest.mark.parametrize("step", RESTORE_STEPS)
def test_crash_during_restore(fault_server, step):
    restart(fault_server, {"DAYTONA_FAULT": f"{step}:exit"})
    daytona = client(fault_server)
    content = os.urandom(200_000)
    sandbox = stopped_sandbox_with_file(daytona, content)
    sandbox.archive()
    assert settled(daytona, sandbox.id).state == "archived"

    request_quietly(sandbox.start)
    assert fault_server.process.wait(timeout=60) == 86

    restart(fault_server)
    daytona = client(fault_server)
    assert_consistent(fault_server, settled(daytona, sandbox.id))
    assert_restarts_with_file(daytona, sandbox.id, content)
    assert stored_archives(fault_server) == []


@pytest.mark.parametrize("seed", range(4))
def test_kill_at_random_moment(fault_server, seed):
    chance = random.Random(seed)
    daytona = client(fault_server)
    content = os.urandom(3_000_000)
    sandbox = stopped_sandbox_with_file(daytona, content)
    if seed % 2:
        sandbox.archive()
        assert settled(daytona, sandbox.id).state == "archived"
        call = sandbox.start
    else:
        call = sandbox.archive

    worker = threading.Thread(target=request_quietly, args=(call,))
    worker.start()
    time.sleep(chance.uniform(0, 0.4))
    restart(fault_server)
    worker.join(timeout=60)

    daytona = client(fault_server)
    current = settled(daytona, sandbox.id)
    if current.state == "started":
        # The restore finished before the kill.
        assert current.fs.download_file("/home/daytona/kept.bin") == content
        daytona.delete(current)
        return
    assert_consistent(fault_server, current)
    assert_restarts_with_file(daytona, sandbox.id, content)
