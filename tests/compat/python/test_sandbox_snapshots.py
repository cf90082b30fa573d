"""Sandbox snapshots and forks through the official Python SDK.

`sandbox.create_snapshot(name)` freezes the sandbox, packs its writable layer as a new image
layer and registers a snapshot that `daytona.create(CreateSandboxFromSnapshotParams(...))`
starts from; `sandbox.fork()` starts a new sandbox with a copy of the files. Both must keep
every kind of file exactly (content, mode, owner, symbolic and hard links, deleted image files,
directories replaced over the image's), and leave the source running with its processes.
"""

import time
import uuid

import pytest
from daytona import CreateSandboxFromSnapshotParams, DaytonaError, SessionExecuteRequest

# Files of several kinds, owned by daytona (uid 1000) and by root, an image file deleted, and
# an image directory replaced by a new one (an opaque directory in overlayfs).
PREPARE = r"""
set -e
mkdir -p /home/daytona/work/sub/deeper
printf 'hello\n' > /home/daytona/work/text.txt
head -c 1048576 /dev/urandom > /home/daytona/work/random.bin
chmod 0751 /home/daytona/work/sub
chmod 0600 /home/daytona/work/text.txt
ln -s text.txt /home/daytona/work/link
ln /home/daytona/work/random.bin /home/daytona/work/hardlink.bin
truncate -s 20M /home/daytona/work/sparse.bin
printf 'deep\n' > /home/daytona/work/sub/deeper/file
sudo sh -c '
  set -e
  mkdir -p /opt/snap
  printf "root only\n" > /opt/snap/root-file
  chmod 0640 /opt/snap/root-file
  install -m 4755 /bin/true /opt/snap/suid-true
  chown daytona:root /opt/snap
  rm /etc/debian_version
  rm -rf /etc/skel
  mkdir /etc/skel
  printf "new\n" > /etc/skel/only-new
'
"""

# One line per file: path, mode, owner, group, size, type, link target; then the checksums.
LISTING = (
    "sudo sh -c \"find /home/daytona/work /opt/snap /etc/skel "
    "-printf '%p|%m|%u|%g|%s|%y|%l|%n\\n' | sort; "
    "find /home/daytona/work /opt/snap /etc/skel -type f -exec md5sum {} + | sort; "
    "test -e /etc/debian_version && echo debian_version-present || echo debian_version-gone\""
)


def _run(sandbox, command: str) -> str:
    response = sandbox.process.exec(command, timeout=60)
    assert response.exit_code == 0, f"{command!r} failed: {response.result}"
    return response.result


def _start_counter(sandbox) -> str:
    """Starts a process that counts in /home/daytona/counter; returns its session id."""
    session = f"counter-{uuid.uuid4().hex[:8]}"
    sandbox.process.create_session(session)
    sandbox.process.execute_session_command(
        session,
        SessionExecuteRequest(
            command="i=0; while true; do i=$((i+1)); echo $i > /tmp/counter; sleep 0.05; done",
            run_async=True,
        ),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if sandbox.process.exec("cat /tmp/counter").result.strip():
            return session
        time.sleep(0.1)
    raise AssertionError("the counter did not start")


def _counter(sandbox) -> int:
    return int(_run(sandbox, "cat /tmp/counter").strip() or 0)


def _assert_counting(sandbox) -> None:
    before = _counter(sandbox)
    time.sleep(0.5)
    assert _counter(sandbox) > before, "the sandbox's processes stopped counting"


@pytest.fixture(scope="module")
def prepared(daytona):
    created = daytona.create()
    _run(created, PREPARE)
    yield created
    daytona.delete(created)


def test_create_snapshot_keeps_every_file_and_the_source_running(daytona, prepared):
    listing = _run(prepared, LISTING)
    assert "debian_version-gone" in listing
    assert "/opt/snap/suid-true|4755|root|root" in listing
    assert "/home/daytona/work/text.txt|600|daytona|daytona|6|f" in listing
    session = _start_counter(prepared)

    name = f"sandbox-snap-{uuid.uuid4().hex[:8]}"
    prepared.create_snapshot(name)
    try:
        assert prepared.state == "started"
        _assert_counting(prepared)
        assert _run(prepared, LISTING) == listing

        snapshot = daytona.snapshot.get(name)
        assert snapshot.state == "active"
        restored = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
        try:
            assert _run(restored, LISTING) == listing
            assert _run(restored, "cat /etc/skel/only-new") == "new\n"
            assert _run(restored, "ls -A /etc/skel").split() == ["only-new"]
            # Files are owned as inside the source: daytona writes its own, sudo still works.
            _run(restored, "echo more >> /home/daytona/work/text.txt && sudo true")
            assert _run(restored, "/opt/snap/suid-true && id -un") == "daytona\n"
        finally:
            daytona.delete(restored)

        with pytest.raises(DaytonaError, match="already exists"):
            prepared.create_snapshot(name)
    finally:
        prepared.process.delete_session(session)
        daytona.snapshot.delete(daytona.snapshot.get(name))


def test_create_snapshot_rejects_bad_names(prepared):
    with pytest.raises(DaytonaError, match="invalid snapshot name"):
        prepared.create_snapshot("-bad name")


def test_snapshot_of_a_stopped_sandbox(daytona):
    created = daytona.create()
    name = f"stopped-snap-{uuid.uuid4().hex[:8]}"
    try:
        _run(created, "echo kept > /home/daytona/kept && sudo rm /etc/debian_version")
        created.stop()
        created.create_snapshot(name)
        assert created.state == "stopped"
        restored = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
        try:
            assert _run(restored, "cat /home/daytona/kept") == "kept\n"
            assert _run(restored, "test -e /etc/debian_version || echo gone") == "gone\n"
        finally:
            daytona.delete(restored)
    finally:
        daytona.delete(created)
        try:
            daytona.snapshot.delete(daytona.snapshot.get(name))
        except DaytonaError:
            pass


def test_fork_copies_the_files_and_diverges(daytona, prepared):
    listing = _run(prepared, LISTING)
    session = _start_counter(prepared)
    name = f"fork-{uuid.uuid4().hex[:8]}"
    forked = prepared.fork(name=name)
    try:
        assert forked.state == "started"
        assert forked.name == name
        assert forked.id != prepared.id
        _assert_counting(prepared)
        assert _run(forked, LISTING) == listing
        # The copy's owners moved to the fork's uid range: daytona and root own what they did.
        _run(forked, "echo fork >> /home/daytona/work/text.txt && sudo true")
        assert _run(forked, "/opt/snap/suid-true && id -un") == "daytona\n"

        # From now on the two diverge.
        _run(forked, "echo only-fork > /home/daytona/work/fork-file")
        _run(prepared, "echo only-source > /home/daytona/work/source-file")
        assert _run(forked, "test -e /home/daytona/work/source-file || echo absent") == "absent\n"
        assert _run(prepared, "test -e /home/daytona/work/fork-file || echo absent") == "absent\n"
        assert _run(prepared, "cat /home/daytona/work/text.txt") == "hello\n"
        assert _run(forked, "cat /home/daytona/work/text.txt") == "hello\nfork\n"
    finally:
        prepared.process.delete_session(session)
        _run(prepared, "rm -f /home/daytona/work/source-file")
        daytona.delete(forked)


def test_fork_of_a_fork_without_a_name(daytona):
    created = daytona.create()
    try:
        _run(created, "echo one > /home/daytona/generation")
        first = created.fork()
        try:
            assert first.name == first.id
            _run(first, "echo two >> /home/daytona/generation")
            second = first.fork()
            try:
                assert _run(second, "cat /home/daytona/generation") == "one\ntwo\n"
            finally:
                daytona.delete(second)
        finally:
            daytona.delete(first)
    finally:
        daytona.delete(created)
