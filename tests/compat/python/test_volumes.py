"""Volumes through the official Python SDK: create, get, list and delete, mounts at a path and
a subpath, sharing between running sandboxes with POSIX semantics and the same owners, the
refusal to delete a volume in use, organization isolation, and persistence across stop,
start and a server restart."""

import os
import signal
import uuid

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig, VolumeMount
from daytona.common.errors import DaytonaError, DaytonaNotFoundError

from daytona_server import Server


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def with_volumes(*mounts: VolumeMount) -> CreateSandboxFromSnapshotParams:
    return CreateSandboxFromSnapshotParams(volumes=list(mounts))


def run(sandbox, command: str) -> str:
    response = sandbox.process.exec(command)
    assert response.exit_code == 0, f"{command!r} exited with {response.exit_code}: {response.result}"
    return response.result


def mount_count() -> int:
    with open("/proc/self/mountinfo") as mountinfo:
        return sum(1 for _ in mountinfo)


def test_create_get_list_delete(daytona):
    name = unique("vol")
    volume = daytona.volume.create(name)
    assert volume.name == name
    assert volume.state == "ready"
    assert volume.error_reason is None

    assert daytona.volume.get(name).id == volume.id
    assert name in [v.name for v in daytona.volume.list()]

    daytona.volume.delete(volume)
    with pytest.raises(DaytonaNotFoundError):
        daytona.volume.get(name)
    assert name not in [v.name for v in daytona.volume.list()]


def test_get_with_create(daytona):
    name = unique("vol")
    created = daytona.volume.get(name, create=True)
    assert created.name == name
    assert daytona.volume.get(name, create=True).id == created.id
    daytona.volume.delete(created)


def test_duplicate_and_invalid_names_rejected(daytona):
    name = unique("vol")
    volume = daytona.volume.create(name)
    try:
        with pytest.raises(DaytonaError) as error:
            daytona.volume.create(name)
        assert error.value.status_code == 409
        with pytest.raises(DaytonaError) as error:
            daytona.volume.create("has space")
        assert error.value.status_code == 400
    finally:
        daytona.volume.delete(volume)


def test_invalid_mounts_rejected(daytona):
    volume = daytona.volume.create(unique("vol"))
    try:
        for mount in [
            VolumeMount(volume_id=volume.id, mount_path="relative"),
            VolumeMount(volume_id=volume.id, mount_path="/"),
            VolumeMount(volume_id=volume.id, mount_path="/proc/v"),
            VolumeMount(volume_id=volume.id, mount_path="/usr/local/bin"),
            VolumeMount(volume_id=volume.id, mount_path="/etc"),
            VolumeMount(volume_id=volume.id, mount_path="/lib/x"),
            VolumeMount(volume_id=volume.id, mount_path="/data", subpath="../escape"),
        ]:
            with pytest.raises(DaytonaError) as error:
                daytona.create(with_volumes(mount))
            assert error.value.status_code == 400, mount
        nested = [
            VolumeMount(volume_id=volume.id, mount_path="/data"),
            VolumeMount(volume_id=volume.id, mount_path="/data/inner"),
        ]
        with pytest.raises(DaytonaError) as error:
            daytona.create(with_volumes(*nested))
        assert error.value.status_code == 400
        with pytest.raises(DaytonaError) as error:
            daytona.create(with_volumes(VolumeMount(volume_id="no-such-volume", mount_path="/data")))
        assert error.value.status_code == 404
    finally:
        daytona.volume.delete(volume)


def test_shared_between_running_sandboxes(daytona):
    volume = daytona.volume.create(unique("shared"))
    # The volume is named by its name in one sandbox and by its id in the other.
    first = daytona.create(with_volumes(VolumeMount(volume_id=volume.name, mount_path="/data")))
    second = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/mnt/shared")))
    try:
        assert first.volumes[0].volume_id == volume.id
        run(first, "echo one > /data/file.txt && mkdir /data/dir && chmod 640 /data/file.txt")
        assert run(second, "cat /mnt/shared/file.txt").strip() == "one"

        # The owner that wrote the file is the owner the other sandbox sees.
        owner = run(second, "stat -c '%U %G %a' /mnt/shared/file.txt").strip()
        assert owner == "daytona daytona 640"
        run(first, "sudo sh -c 'echo root > /data/root.txt'")
        assert run(second, "stat -c %U /mnt/shared/root.txt").strip() == "root"

        # POSIX semantics: append, random writes, rename, permissions.
        run(second, "echo two >> /mnt/shared/file.txt")
        assert run(first, "cat /data/file.txt") == "one\ntwo\n"
        run(first, "printf XY | dd of=/data/file.txt bs=1 seek=1 conv=notrunc status=none")
        assert run(second, "cat /mnt/shared/file.txt") == "oXY\ntwo\n"
        run(second, "mv /mnt/shared/file.txt /mnt/shared/dir/renamed.txt")
        assert run(first, "cat /data/dir/renamed.txt") == "oXY\ntwo\n"
        assert "No such file" in first.process.exec("cat /data/file.txt").result
        run(first, "chmod 600 /data/dir/renamed.txt")
        assert run(second, "stat -c %a /mnt/shared/dir/renamed.txt").strip() == "600"
        # root of the second sandbox reads it; its own root is root for the file too.
        assert run(second, "sudo cat /mnt/shared/dir/renamed.txt") == "oXY\ntwo\n"

        # Through the file system API as well.
        first.fs.upload_file(b"uploaded\n", "/data/up.txt")
        assert second.fs.download_file("/mnt/shared/up.txt") == b"uploaded\n"
    finally:
        daytona.delete(first)
        daytona.delete(second)
        daytona.volume.delete(volume)


# Volume files are stored with uid VOLUME_UID_BASE + k for uid k of a sandbox.
VOLUME_UID_BASE = 900_000_000


def test_host_sees_no_privileged_files(daytona, server):
    volume = daytona.volume.create(unique("setuid"))
    sandbox = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/data")))
    try:
        run(sandbox, "sudo sh -c 'cp /bin/sh /data/rootsh && chmod 4755 /data/rootsh'")
        run(sandbox, "echo mine > /data/mine.txt")
        host_dir = os.path.join(server.data_dir, "volumes", volume.id)
        # Neither host root nor a host user owns what a sandbox writes, so a setuid bit
        # there runs as nobody in particular.
        root_made = os.stat(os.path.join(host_dir, "rootsh"))
        assert root_made.st_uid == VOLUME_UID_BASE
        assert root_made.st_gid == VOLUME_UID_BASE
        assert os.stat(os.path.join(host_dir, "mine.txt")).st_uid == VOLUME_UID_BASE + 1000
        # No other host user can enter the directories above the volume.
        assert os.stat(os.path.join(server.data_dir, "volumes")).st_mode & 0o077 == 0
        assert os.stat(server.data_dir).st_mode & 0o077 == 0
    finally:
        daytona.delete(sandbox)
        daytona.volume.delete(volume)


def test_subpath_mounts_only_that_directory(daytona):
    volume = daytona.volume.create(unique("sub"))
    whole = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/vol")))
    part = daytona.create(
        with_volumes(VolumeMount(volume_id=volume.id, mount_path="/home/daytona/part", subpath="users/alice"))
    )
    try:
        run(part, "echo alice > /home/daytona/part/a.txt")
        assert run(whole, "cat /vol/users/alice/a.txt").strip() == "alice"
        run(whole, "echo top > /vol/top.txt")
        assert "No such file" in part.process.exec("cat /home/daytona/part/top.txt").result
        assert "No such file" in part.process.exec("ls /home/daytona/part/../part/../../top.txt").result
    finally:
        daytona.delete(whole)
        daytona.delete(part)
        daytona.volume.delete(volume)


def test_symlink_in_volume_cannot_lead_a_subpath_outside(daytona, server):
    volume = daytona.volume.create(unique("link"))
    writer = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/data")))
    try:
        run(writer, "ln -s /etc /data/evil")
        with pytest.raises(DaytonaError):
            daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/x", subpath="evil")))
    finally:
        daytona.delete(writer)
        daytona.volume.delete(volume)


def test_delete_in_use_gives_409(daytona):
    volume = daytona.volume.create(unique("busy"))
    sandbox = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/data")))
    try:
        with pytest.raises(DaytonaError) as error:
            daytona.volume.delete(volume)
        assert error.value.status_code == 409
        sandbox.stop()
        with pytest.raises(DaytonaError) as error:
            daytona.volume.delete(volume)
        assert error.value.status_code == 409
    finally:
        daytona.delete(sandbox)
    daytona.volume.delete(volume)


def test_files_survive_stop_and_start(daytona):
    volume = daytona.volume.create(unique("keep"))
    sandbox = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/data")))
    try:
        run(sandbox, "echo kept > /data/kept.txt")
        sandbox.stop()
        sandbox.start()
        assert run(sandbox, "cat /data/kept.txt").strip() == "kept"
    finally:
        daytona.delete(sandbox)
    # A new sandbox sees the files of a deleted one.
    again = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/again")))
    try:
        assert run(again, "cat /again/kept.txt").strip() == "kept"
    finally:
        daytona.delete(again)
        daytona.volume.delete(volume)


def test_other_organization_gets_404(daytona, server):
    volume = daytona.volume.create(unique("private"))
    name = f"org-{uuid.uuid4().hex[:8]}"
    status, org = server.request("POST", "/organizations", {"name": name, "defaultRegionId": "local"})
    assert status == 201, org
    status, key = server.request(
        "POST",
        "/api-keys",
        {"name": "member", "permissions": ["write:sandboxes", "delete:sandboxes", "write:volumes", "read:volumes", "delete:volumes"]},
        headers={"X-Daytona-Organization-ID": org["id"]},
    )
    assert status == 201, key
    other = Daytona(DaytonaConfig(api_key=key["value"], api_url=server.api_url))
    try:
        with pytest.raises(DaytonaNotFoundError):
            other.volume.get(volume.name)
        assert other.volume.list() == []
        status, _ = server.request("GET", f"/volumes/{volume.id}", key=key["value"])
        assert status == 404
        status, _ = server.request("DELETE", f"/volumes/{volume.id}", key=key["value"])
        assert status == 404
        with pytest.raises(DaytonaError) as error:
            other.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/data")))
        assert error.value.status_code == 404
        # The same name is free in the other organization.
        own = other.volume.create(volume.name)
        assert own.id != volume.id
        other.volume.delete(own)
    finally:
        daytona.volume.delete(volume)


def test_volumes_survive_server_restart():
    server = Server()
    server.start()
    try:
        daytona = Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))
        volume = daytona.volume.create("persistent")
        sandbox = daytona.create(with_volumes(VolumeMount(volume_id=volume.id, mount_path="/data")))
        run(sandbox, "echo before > /data/before.txt")

        # A graceful stop keeps sandboxes running; the next server adopts them.
        server.process.send_signal(signal.SIGTERM)
        server.process.wait(timeout=30)
        server.process = None
        server.start()

        daytona = Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))
        assert daytona.volume.get("persistent").id == volume.id
        adopted = daytona.get(sandbox.id)
        assert run(adopted, "cat /data/before.txt").strip() == "before"
        adopted.stop()
        adopted.start()
        assert run(adopted, "cat /data/before.txt").strip() == "before"
        daytona.delete(adopted)
        daytona.volume.delete(volume)
    finally:
        server.stop()
        server.remove_data()
