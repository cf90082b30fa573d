"""Disk limits: a sandbox's writable layer is an ext4 filesystem of `disk` GiB in a sparse
file, so writing past the limit fails with ENOSPC inside the sandbox and the host gives it no
more than that. Resize grows a stopped sandbox's disk; stop and delete leave no loop device
and no mount behind."""

import os
import subprocess
import time

import pytest
from daytona import Resources


def create_with_disk(daytona, server, gib: int):
    status, body = server.request("POST", "/sandbox", {"disk": gib})
    assert status == 200, body
    sandbox = daytona.get(body["id"])
    sandbox.wait_for_sandbox_start()
    return sandbox


def disk_image(server, sandbox_id: str) -> str:
    return os.path.join(server.data_dir, "sandboxes", sandbox_id, "disk.img")


def loop_devices_of(path: str) -> list[str]:
    output = subprocess.run(["losetup", "-j", path], capture_output=True, text=True, check=True).stdout
    return [line for line in output.splitlines() if line.strip()]


def mounts_under(path: str) -> list[str]:
    with open("/proc/self/mountinfo") as mountinfo:
        return [line for line in mountinfo if path in line]


def root_size_kib(sandbox) -> int:
    output = sandbox.process.exec("df -k --output=size / | tail -1").result
    return int(output.strip())


@pytest.fixture(autouse=True)
def needs_loop_devices():
    if os.geteuid() != 0 or not os.path.exists("/dev/loop-control"):
        pytest.skip("SKIPPED: disk limits need root and loop devices")


def test_writing_past_the_limit_fails_with_enospc(daytona, server):
    sandbox = create_with_disk(daytona, server, 1)
    image = disk_image(server, sandbox.id)
    try:
        assert os.path.getsize(image) == 1 << 30
        assert root_size_kib(sandbox) <= 1 << 20
        result = sandbox.process.exec(
            "dd if=/dev/zero of=/home/daytona/big bs=1M count=1500 2>&1; echo exit=$?", timeout=120
        ).result
        assert "No space left on device" in result, result
        assert "exit=1" in result
        # The host holds no more than the limit for it.
        assert os.stat(image).st_blocks * 512 <= (1 << 30) + (16 << 20)

        # Space comes back when the file is deleted, on the host too (discard).
        sandbox.process.exec("rm /home/daytona/big && sync")
        result = sandbox.process.exec("dd if=/dev/zero of=/home/daytona/small bs=1M count=100 2>&1; echo exit=$?").result
        assert "exit=0" in result, result
        # The loop device punches the holes asynchronously.
        deadline = time.monotonic() + 20
        while os.stat(image).st_blocks * 512 >= 512 << 20 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert os.stat(image).st_blocks * 512 < 512 << 20
    finally:
        daytona.delete(sandbox)
    assert not os.path.exists(image)
    assert loop_devices_of(image) == []


def test_files_survive_stop_and_start_and_nothing_leaks(daytona, server):
    sandbox = create_with_disk(daytona, server, 1)
    image = disk_image(server, sandbox.id)
    sandbox_dir = os.path.dirname(image)
    try:
        sandbox.fs.upload_file(b"kept\n", "/home/daytona/kept.txt")
        assert len(loop_devices_of(image)) == 1
        # The filesystem is mounted only in the sandbox's own mount namespace.
        assert mounts_under(sandbox_dir) == []

        sandbox.stop()
        assert loop_devices_of(image) == []
        sandbox.start()
        assert sandbox.fs.download_file("/home/daytona/kept.txt") == b"kept\n"
    finally:
        daytona.delete(sandbox)
    assert loop_devices_of(image) == []
    assert mounts_under(sandbox_dir) == []


def test_resize_grows_a_stopped_sandbox_disk(daytona, server):
    sandbox = create_with_disk(daytona, server, 1)
    try:
        sandbox.fs.upload_file(b"before resize\n", "/home/daytona/file.txt")
        before = root_size_kib(sandbox)
        sandbox.stop()
        sandbox.resize(Resources(disk=2))
        sandbox.start()
        assert sandbox.disk == 2
        after = root_size_kib(sandbox)
        assert after > before + (900 << 10), (before, after)
        assert sandbox.fs.download_file("/home/daytona/file.txt") == b"before resize\n"
        assert os.path.getsize(disk_image(server, sandbox.id)) == 2 << 30
    finally:
        daytona.delete(sandbox)


def test_default_sandbox_has_its_disk_limit(sandbox, server):
    size = root_size_kib(sandbox)
    assert size <= sandbox.disk << 20
    assert size > (sandbox.disk << 20) * 8 // 10
