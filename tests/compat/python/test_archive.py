"""Archive and restore through the official SDK: a stopped sandbox's files move to object
storage, leave the host, and come back with every file, owner, mode, link and deletion when
the sandbox starts; archived sandboxes survive a server restart, and the auto-archive interval
archives stopped sandboxes by itself."""

import os
import signal
import time

import pytest
from conftest import client_for as client
from daytona import Daytona

from daytona_server import Server

# Files of every kind, a file the image had and the sandbox deleted (a whiteout), and a
# directory the sandbox replaced (an opaque directory).
PREPARE = r"""
set -e
cd /home/daytona
mkdir -p work/nested
printf 'hello\n' > work/plain.txt
head -c 3000000 /dev/urandom > work/random.bin
sha256sum work/random.bin | cut -d' ' -f1 > work/random.sha
ln -s plain.txt work/link
ln work/plain.txt work/hard
chmod 640 work/plain.txt
sudo install -o root -g root -m 4755 /bin/true /usr/local/bin/setuid-true
sudo rm /etc/debian_version
sudo rm -rf /usr/share/doc && sudo mkdir /usr/share/doc && echo new | sudo tee /usr/share/doc/only >/dev/null
"""

CHECK = r"""
cd /home/daytona
cat work/plain.txt
test "$(sha256sum work/random.bin | cut -d' ' -f1)" = "$(cat work/random.sha)" && echo random-ok
readlink work/link
test work/plain.txt -ef work/hard && echo hardlink-ok
stat -c '%a %U' work/plain.txt
stat -c '%a %U' /usr/local/bin/setuid-true
test -e /etc/debian_version || echo whiteout-ok
ls /usr/share/doc
"""

EXPECTED = [
    "hello",
    "random-ok",
    "plain.txt",
    "hardlink-ok",
    "640 daytona",
    "4755 root",
    "whiteout-ok",
    "only",
]


def sandbox_dir(server, sandbox_id: str) -> str:
    return os.path.join(server.data_dir, "sandboxes", sandbox_id)


def local_layer(server, sandbox_id: str) -> list[str]:
    """The writable layer's files of a sandbox on the host, by name."""
    root = sandbox_dir(server, sandbox_id)
    return [name for name in ("disk.img", "upper") if os.path.exists(os.path.join(root, name))]


def prepared_sandbox(daytona: Daytona):
    sandbox = daytona.create()
    result = sandbox.process.exec(PREPARE)
    assert result.exit_code == 0, result.result
    return sandbox


def wait_state(daytona: Daytona, sandbox_id: str, wanted: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while True:
        sandbox = daytona.get(sandbox_id)
        if sandbox.state == wanted or time.monotonic() > deadline:
            return sandbox
        time.sleep(0.2)


def assert_files_back(sandbox):
    result = sandbox.process.exec(CHECK)
    assert result.exit_code == 0, result.result
    assert result.result.split() == " ".join(EXPECTED).split()


def test_archive_and_restore_keep_files(own_server):
    daytona = client(own_server)
    sandbox = prepared_sandbox(daytona)
    assert local_layer(own_server, sandbox.id)

    sandbox.stop()
    sandbox.archive()
    archived = wait_state(daytona, sandbox.id, "archived")
    assert archived.state == "archived"
    assert local_layer(own_server, sandbox.id) == []

    sandbox.start()
    assert sandbox.state == "started"
    assert_files_back(sandbox)
    daytona.delete(sandbox)


def test_archive_needs_stopped_sandbox(own_server):
    daytona = client(own_server)
    sandbox = daytona.create()
    status, body = own_server.request("POST", f"/sandbox/{sandbox.id}/archive")
    assert status == 400
    assert "started" in body["message"]
    daytona.delete(sandbox)


def test_archived_sandbox_survives_restart(own_server):
    daytona = client(own_server)
    sandbox = prepared_sandbox(daytona)
    sandbox.stop()
    sandbox.archive()
    assert wait_state(daytona, sandbox.id, "archived").state == "archived"

    own_server.process.send_signal(signal.SIGKILL)
    own_server.process.wait()
    own_server.process = None
    own_server.start()

    daytona = client(own_server)
    restored = daytona.get(sandbox.id)
    assert restored.state == "archived"
    restored.start()
    assert restored.state == "started"
    assert_files_back(restored)
    daytona.delete(restored)


def test_delete_archived_sandbox_removes_archive(own_server):
    daytona = client(own_server)
    sandbox = daytona.create()
    sandbox.stop()
    sandbox.archive()
    assert wait_state(daytona, sandbox.id, "archived").state == "archived"
    archives = os.path.join(own_server.data_dir, "objects", "daytona-archives")
    stored = [files for _, _, files in os.walk(archives) if files]
    assert stored, "the archive is not in object storage"

    daytona.delete(sandbox)
    leftovers = [files for _, _, files in os.walk(archives) if files]
    assert leftovers == []
    assert not os.path.exists(sandbox_dir(own_server, sandbox.id))


@pytest.fixture
def fast_server():
    instance = Server(["--lifecycle-minute", "1"])
    instance.start()
    yield instance
    instance.stop()
    instance.remove_data()


def test_auto_archive_interval(fast_server):
    daytona = client(fast_server)
    sandbox = daytona.create()
    sandbox.fs.upload_file(b"auto\n", "/home/daytona/auto.txt")
    sandbox.set_auto_archive_interval(2)
    sandbox.stop()

    # Two lifecycle minutes of one second each, plus the reconciler's sweep interval.
    archived = wait_state(daytona, sandbox.id, "archived", timeout=30)
    assert archived.state == "archived"
    assert local_layer(fast_server, sandbox.id) == []

    archived.start()
    assert archived.fs.download_file("/home/daytona/auto.txt") == b"auto\n"
    daytona.delete(archived)
