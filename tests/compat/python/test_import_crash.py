"""Crash safety of `daytona snapshot import`: the CLI (built with the `fault-injection` feature)
exits at each named step of an import, and then the same import succeeds and the snapshot
works, so a crash leaves nothing in the image store that blocks or corrupts a retry."""

import os
import shutil
import subprocess
import uuid

import pytest
from daytona import CreateSandboxFromSnapshotParams
from test_snapshots import HELLO, _cli, _make_layout

FAULT_BIN = os.environ.get("DAYTONA_FAULT_BIN")

IMPORT_STEPS = ["import.blobs-written", "import.layers-unpacked", "import.manifest-written"]


@pytest.fixture(scope="module")
def archive(server, daytona, tmp_path_factory):
    """A `docker save` tarball of the default snapshot plus a layer of its own."""
    if not FAULT_BIN or not os.path.exists(FAULT_BIN):
        pytest.skip("SKIPPED: DAYTONA_FAULT_BIN does not name a daytona built with --features fault-injection")
    if shutil.which("skopeo") is None:
        pytest.skip("SKIPPED: skopeo is not installed (apt-get install skopeo)")
    work = tmp_path_factory.mktemp("import-crash")
    base = str(work / "default-oci")
    exported = _cli(server, "export", "daytona-default", "--format", "oci", base)
    assert exported.returncode == 0, exported.stderr
    layout = str(work / "layout")
    _make_layout(base, layout)
    shutil.rmtree(base)
    path = str(work / "image.tar")
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{layout}:v1", f"docker-archive:{path}:crash/app:v1"],
        check=True,
        timeout=600,
    )
    shutil.rmtree(layout)
    return path


@pytest.mark.parametrize("step", IMPORT_STEPS)
def test_crash_during_import(server, daytona, archive, step):
    name = f"import-crash-{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, DAYTONA_FAULT=f"{step}:exit")
    crashed = subprocess.run(
        [FAULT_BIN, "snapshot", "import", "--no-register", "--name", name, archive, "--image-cache", server.image_cache],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert crashed.returncode == 86, crashed.stderr

    retried = _cli(server, "import", "--name", name, archive)
    assert retried.returncode == 0, retried.stderr
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
    try:
        assert sandbox.fs.download_file("/srv/app/hello.txt") == HELLO
    finally:
        daytona.delete(sandbox)
        daytona.snapshot.delete(daytona.snapshot.get(name))
