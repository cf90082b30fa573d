"""Snapshots through the official Python SDK: import with the CLI, list, get, create from an
imported image, activate, sandboxes from the snapshot, delete and what it removes from disk.

The image under test is the default snapshot exported with `daytona snapshot export`, plus a
small layer and a configuration with its own Env and WorkingDir, turned into a docker-archive
with `skopeo copy` (Debian package `skopeo`) and imported with `daytona snapshot import`.
"""

import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid

import pytest
from daytona_api_client.exceptions import BadRequestException
from daytona import (
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    DaytonaError,
    Resources,
)

HELLO = b"hello from the imported image\n"
BINARY = bytes(range(256)) * 16
GREETING = "hello-from-image"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _write_blob(layout: str, data: bytes) -> tuple[str, int]:
    digest = _sha256(data)
    with open(os.path.join(layout, "blobs", "sha256", digest.split(":")[1]), "wb") as blob:
        blob.write(data)
    return digest, len(data)


def _extra_layer() -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("srv/app/hello.txt", HELLO), ("srv/app/data.bin", BINARY)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return stream.getvalue()


def _make_layout(base: str, layout: str) -> str:
    """Copies the exported default snapshot and adds a layer, Env and WorkingDir; returns the
    diff ID of the added layer."""
    shutil.copytree(base, layout)
    with open(os.path.join(layout, "index.json")) as index_file:
        descriptor = json.load(index_file)["manifests"][0]
    blobs = os.path.join(layout, "blobs", "sha256")
    with open(os.path.join(blobs, descriptor["digest"].split(":")[1])) as manifest_file:
        manifest = json.load(manifest_file)
    with open(os.path.join(blobs, manifest["config"]["digest"].split(":")[1])) as config_file:
        config = json.load(config_file)

    layer = _extra_layer()
    compressed = gzip.compress(layer)
    layer_digest, layer_size = _write_blob(layout, compressed)
    config["rootfs"]["diff_ids"].append(_sha256(layer))
    runtime = config.setdefault("config", {})
    runtime["Env"] = (runtime.get("Env") or []) + [f"GREETING={GREETING}"]
    runtime["WorkingDir"] = "/srv/app"
    config_digest, config_size = _write_blob(layout, json.dumps(config).encode())
    manifest["config"].update(digest=config_digest, size=config_size)
    manifest["layers"].append(
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
    )
    manifest_digest, manifest_size = _write_blob(layout, json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"org.opencontainers.image.ref.name": "v1"},
            }
        ],
    }
    with open(os.path.join(layout, "index.json"), "w") as index_file:
        json.dump(index, index_file)
    return _sha256(layer)


def _cli(server, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DAYTONA_API_URL=server.api_url, DAYTONA_API_KEY=server.api_key)
    return subprocess.run(
        [server.binary, "snapshot", *args, "--image-cache", server.image_cache],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture(scope="module")
def imported(server, daytona, tmp_path_factory):
    """Imports the test image with the CLI (which registers it); yields (name, extra diff ID)."""
    if shutil.which("skopeo") is None:
        pytest.skip("SKIPPED: skopeo is not installed (apt-get install skopeo)")
    daytona.snapshot.list()  # waits for nothing, but fails early when the server is down
    work = tmp_path_factory.mktemp("snapshots")
    base = str(work / "default-oci")
    exported = _cli(server, "export", "daytona-default", "--format", "oci", base)
    assert exported.returncode == 0, exported.stderr
    layout = str(work / "layout")
    diff_id = _make_layout(base, layout)
    shutil.rmtree(base)
    archive = str(work / "image.tar")
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{layout}:v1", f"docker-archive:{archive}:snaptest/app:v1"],
        check=True,
        timeout=600,
    )
    shutil.rmtree(layout)

    name = f"snaptest-{uuid.uuid4().hex[:8]}"
    result = _cli(server, "import", "--name", name, archive)
    os.remove(archive)
    assert result.returncode == 0, result.stderr
    yield name, diff_id
    # Whatever a failed test left.
    for leftover in (name, f"{name}-copy"):
        try:
            daytona.snapshot.delete(leftover)
        except DaytonaError:
            pass


def test_list_paginates_and_includes_the_imported_snapshot(daytona, imported):
    name, _ = imported
    everything = daytona.snapshot.list(limit=200)
    assert name in [snapshot.name for snapshot in everything.items]
    first = daytona.snapshot.list(page=1, limit=1)
    assert len(first.items) == 1
    assert first.total == everything.total >= 2
    assert first.total_pages == first.total
    second = daytona.snapshot.list(page=2, limit=1)
    assert second.page == 2 and second.items[0].name != first.items[0].name


def test_get_by_name_and_id(daytona, imported):
    name, _ = imported
    snapshot = daytona.snapshot.get(name)
    assert snapshot.name == name
    assert snapshot.image_name == name
    assert snapshot.state == "active"
    assert snapshot.general is False
    assert daytona.snapshot.get(snapshot.id).name == name
    with pytest.raises(DaytonaError):
        daytona.snapshot.get(f"{name}-missing")


def test_create_from_an_imported_image_with_resources(daytona, imported):
    name, _ = imported
    logs = []
    copy = daytona.snapshot.create(
        CreateSnapshotParams(name=f"{name}-copy", image=name, resources=Resources(cpu=1, memory=1, disk=3)),
        on_logs=logs.append,
    )
    assert copy.state == "active"
    assert (copy.cpu, copy.mem, copy.disk) == (1, 1, 3)
    assert copy.image_name == name
    assert any("Created snapshot" in line for line in logs)
    with pytest.raises(DaytonaError, match="already exists"):
        daytona.snapshot.create(CreateSnapshotParams(name=f"{name}-copy", image=name))


def test_create_from_an_image_that_is_not_imported_fails(daytona):
    with pytest.raises(DaytonaError, match="daytona snapshot import"):
        daytona.snapshot.create(CreateSnapshotParams(name=f"never-{uuid.uuid4().hex[:8]}", image="not-imported:1"))


def test_deactivate_and_activate(daytona, server, imported):
    name, _ = imported
    snapshot = daytona.snapshot.get(f"{name}-copy")
    status, _ = server.request("POST", f"/snapshots/{snapshot.id}/deactivate")
    assert status == 204
    assert daytona.snapshot.get(snapshot.id).state == "inactive"
    with pytest.raises(DaytonaError, match="not active"):
        daytona.create(CreateSandboxFromSnapshotParams(snapshot=f"{name}-copy"))
    assert daytona.snapshot.activate(f"{name}-copy").state == "active"
    # activate() is the one snapshot method the SDK does not wrap: the client's 400 arrives.
    with pytest.raises((DaytonaError, BadRequestException), match="cannot be changed"):
        daytona.snapshot.activate("daytona-default")


def test_sandbox_from_the_imported_snapshot_has_its_files_and_env(daytona, imported):
    name, _ = imported
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name, env_vars={"EXTRA": "1"}))
    try:
        assert sandbox.snapshot == name
        assert sandbox.fs.download_file("/srv/app/hello.txt") == HELLO
        assert sandbox.fs.download_file("/srv/app/data.bin") == BINARY
        result = sandbox.process.exec('echo "$GREETING $EXTRA"')
        assert result.result.strip() == f"{GREETING} 1"

        # Deleting a snapshot that a sandbox uses is refused.
        with pytest.raises(DaytonaError, match="used by 1 sandbox"):
            daytona.snapshot.delete(name)
    finally:
        daytona.delete(sandbox)


def test_sandbox_from_the_imported_snapshot_starts_in_its_work_dir(daytona, imported):
    name, _ = imported
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
    try:
        assert sandbox.get_work_dir() == "/srv/app"
        assert sandbox.process.exec("pwd").result.strip() == "/srv/app"
    finally:
        daytona.delete(sandbox)


def test_delete_removes_the_image_once_no_snapshot_uses_it(daytona, server, imported):
    name, diff_id = imported
    layer_dir = os.path.join(server.image_cache, "layers", "sha256", diff_id.split(":")[1])
    assert os.path.isdir(layer_dir)

    # The copy names the same image, so the image stays.
    daytona.snapshot.delete(f"{name}-copy")
    assert os.path.isdir(layer_dir)
    with pytest.raises(DaytonaError):
        daytona.snapshot.get(f"{name}-copy")

    daytona.snapshot.delete(name)
    assert not os.path.exists(layer_dir)
    with open(os.path.join(server.image_cache, "index.json")) as index_file:
        names = [m.get("annotations", {}).get("org.opencontainers.image.ref.name") for m in json.load(index_file)["manifests"]]
    assert name not in names and "daytona-default" in names
    # The default snapshot still works.
    assert daytona.snapshot.get("daytona-default").state == "active"
