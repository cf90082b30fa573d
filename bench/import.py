"""Time to import an image that the store has never seen and to start the first sandbox from it,
next to a create from the default snapshot in the same run (the baseline).

Each iteration turns the exported default snapshot into a new image: a random file is appended
to its base layer, so every layer digest is new and the import must verify, store and unpack
the whole 180 MB root filesystem again. The image goes through `skopeo copy` into a
`docker save` tarball (not timed). Then it times `daytona snapshot import` (CLI) and the first
`daytona.create()` from the new snapshot until it is started, and, as the baseline,
`daytona.create()` from the default snapshot. The snapshot is deleted after each iteration,
which removes its layers from the store.

Run as root with DAYTONA_BIN, DAYTONA_DAEMON_BIN and DAYTONA_IMAGE_CACHE set, as for the
Python suite, and skopeo installed: python bench/import.py --iterations 3
"""

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))

from daytona_server import Server  # noqa: E402


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def blob_path(layout: str, digest: str) -> str:
    return os.path.join(layout, "blobs", "sha256", digest.split(":")[1])


def write_blob(layout: str, data: bytes) -> tuple[str, int]:
    digest = sha256(data)
    with open(blob_path(layout, digest), "wb") as blob:
        blob.write(data)
    return digest, len(data)


def fresh_layout(base: str, layout: str) -> None:
    """Copies OCI layout `base` with a random file appended to its first layer."""
    shutil.copytree(base, layout)
    with open(os.path.join(layout, "index.json")) as index_file:
        descriptor = json.load(index_file)["manifests"][0]
    with open(blob_path(layout, descriptor["digest"])) as manifest_file:
        manifest = json.load(manifest_file)
    with open(blob_path(layout, manifest["config"]["digest"])) as config_file:
        config = json.load(config_file)

    first = manifest["layers"][0]
    with open(blob_path(layout, first["digest"]), "rb") as layer_file:
        layer = layer_file.read()
    if layer[:2] == b"\x1f\x8b":
        layer = gzip.decompress(layer)
    stream = io.BytesIO(layer)
    with tarfile.open(fileobj=stream, mode="a") as tar:
        marker = uuid.uuid4().hex.encode()
        info = tarfile.TarInfo("etc/bench-import-marker")
        info.size, info.mode, info.mtime = len(marker), 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(marker))
    layer = stream.getvalue()
    compressed = gzip.compress(layer, compresslevel=1)
    digest, size = write_blob(layout, compressed)
    first.update(digest=digest, size=size, mediaType="application/vnd.oci.image.layer.v1.tar+gzip")
    config["rootfs"]["diff_ids"][0] = sha256(layer)

    config_digest, config_size = write_blob(layout, json.dumps(config).encode())
    manifest["config"].update(digest=config_digest, size=config_size)
    manifest_digest, manifest_size = write_blob(layout, json.dumps(manifest).encode())
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


def cli(server, *args: str) -> None:
    env = dict(os.environ, DAYTONA_API_URL=server.api_url, DAYTONA_API_KEY=server.api_key)
    subprocess.run(
        [server.binary, "snapshot", *args, "--image-cache", server.image_cache],
        env=env,
        check=True,
        capture_output=True,
        timeout=900,
    )


def one_iteration(server, daytona, base: str, work: str) -> dict[str, float]:
    from daytona import CreateSandboxFromSnapshotParams

    layout = os.path.join(work, "layout")
    archive = os.path.join(work, "image.tar")
    fresh_layout(base, layout)
    subprocess.run(
        ["skopeo", "copy", "--quiet", f"oci:{layout}:v1", f"docker-archive:{archive}:bench/import:v1"],
        check=True,
        timeout=900,
    )
    shutil.rmtree(layout)

    times = {}
    name = f"bench-import-{uuid.uuid4().hex[:8]}"
    try:
        started = time.perf_counter()
        cli(server, "import", "--name", name, archive)
        times["import"] = time.perf_counter() - started

        started = time.perf_counter()
        sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name), timeout=300)
        times["first create from it"] = time.perf_counter() - started
        marker = sandbox.process.exec("cat /etc/bench-import-marker").result.strip()
        assert len(marker) == 32, marker
        daytona.delete(sandbox)

        started = time.perf_counter()
        baseline = daytona.create(CreateSandboxFromSnapshotParams(snapshot="daytona-default"))
        times["create from default"] = time.perf_counter() - started
        daytona.delete(baseline)
    finally:
        os.remove(archive)
        try:
            daytona.snapshot.delete(daytona.snapshot.get(name))
        except Exception:  # noqa: BLE001 - the snapshot may not exist after a failure
            pass
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3)
    args = parser.parse_args()
    server = Server()
    work = tempfile.mkdtemp(prefix="dtn-bench-import-")
    samples: dict[str, list[float]] = {}
    try:
        server.start()
        os.environ["DAYTONA_API_URL"] = server.api_url
        os.environ["DAYTONA_API_KEY"] = server.api_key
        from daytona import Daytona

        daytona = Daytona()
        base = os.path.join(work, "default-oci")
        cli(server, "export", "daytona-default", "--format", "oci", base)
        for _ in range(args.iterations):
            for label, seconds in one_iteration(server, daytona, base, work).items():
                samples.setdefault(label, []).append(seconds * 1000)
    finally:
        server.stop()
        server.remove_data()
        shutil.rmtree(work, ignore_errors=True)
    for label, values in samples.items():
        values.sort()
        print(
            f"{label:<22} median {statistics.median(values):8.1f} ms  "
            f"min {values[0]:8.1f} ms  max {values[-1]:8.1f} ms  ({len(values)} samples)"
        )
    first = statistics.median(samples["first create from it"])
    baseline = statistics.median(samples["create from default"])
    print(f"first create from a fresh image / create from the default snapshot: {first / baseline:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
