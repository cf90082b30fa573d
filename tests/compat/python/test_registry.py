"""The OCI distribution registry under /v2/ and pulls by reference.

skopeo (Debian package `skopeo`) pushes an image to one server on loopback, with an API key as
the basic auth password, inspects it and pulls it back byte for byte. A second server, with
its own data directory and image store, then pulls the image by reference from the first one
(`POST /snapshots` with imageName `127.0.0.1:PORT/NAME:TAG`, and `daytona snapshot pull`) and
starts a sandbox from it.

The image is the default snapshot exported with `daytona snapshot export`, plus a small gzip
layer, so that the pulling server unpacks a layer it does not have. Both servers get their
own image store: a copy of the shared cache's default snapshot made of hard links, removed at
the end.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.error
import urllib.request

import pytest
from daytona import CreateSandboxFromSnapshotParams, Daytona, DaytonaConfig

from daytona_server import Server

HELLO = b"hello from the registry\n"
REPOSITORY = "apps/hello"
TAG = "v1"


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _file_digest(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as blob:
        for chunk in iter(lambda: blob.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def _copy_default_snapshot(shared: str, target: str) -> None:
    """Makes an image store at `target` holding only the default snapshot of `shared`, with
    hard links to its blobs and unpacked layers."""
    with open(os.path.join(shared, "index.json")) as index_file:
        index = json.load(index_file)
    entry = next(
        m for m in index["manifests"]
        if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == "daytona-default"
    )
    blobs = os.path.join(shared, "blobs", "sha256")
    with open(os.path.join(blobs, entry["digest"][7:])) as manifest_file:
        manifest = json.load(manifest_file)
    with open(os.path.join(blobs, manifest["config"]["digest"][7:])) as config_file:
        config = json.load(config_file)

    os.makedirs(os.path.join(target, "blobs", "sha256"))
    os.makedirs(os.path.join(target, "layers"), mode=0o700)
    os.makedirs(os.path.join(target, "layers", "sha256"))
    shutil.copy(os.path.join(shared, "oci-layout"), target)
    with open(os.path.join(target, "index.json"), "w") as index_file:
        json.dump({**index, "manifests": [entry]}, index_file)
    for digest in [entry["digest"], manifest["config"]["digest"]] + [l["digest"] for l in manifest["layers"]]:
        os.link(os.path.join(blobs, digest[7:]), os.path.join(target, "blobs", "sha256", digest[7:]))
    for diff_id in config["rootfs"]["diff_ids"]:
        subprocess.run(
            ["cp", "-a", "--link", os.path.join(shared, "layers", "sha256", diff_id[7:]),
             os.path.join(target, "layers", "sha256")],
            check=True,
        )


def _extra_layer() -> bytes:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("srv/registry/hello.txt")
        info.size, info.mode, info.mtime = len(HELLO), 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(HELLO))
    return stream.getvalue()


def _add_layer(layout: str) -> None:
    """Adds a gzip layer with /srv/registry/hello.txt to the only image of an OCI layout."""
    blobs = os.path.join(layout, "blobs", "sha256")

    def write(data: bytes) -> tuple[str, int]:
        digest = _sha256(data)
        with open(os.path.join(blobs, digest[7:]), "wb") as blob:
            blob.write(data)
        return digest, len(data)

    with open(os.path.join(layout, "index.json")) as index_file:
        index = json.load(index_file)
    descriptor = index["manifests"][0]
    with open(os.path.join(blobs, descriptor["digest"][7:])) as manifest_file:
        manifest = json.load(manifest_file)
    with open(os.path.join(blobs, manifest["config"]["digest"][7:])) as config_file:
        config = json.load(config_file)
    layer = _extra_layer()
    layer_digest, layer_size = write(gzip.compress(layer, mtime=0))
    config["rootfs"]["diff_ids"].append(_sha256(layer))
    config_digest, config_size = write(json.dumps(config).encode())
    manifest["config"].update(digest=config_digest, size=config_size)
    manifest["layers"].append(
        {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer_digest, "size": layer_size}
    )
    manifest_digest, manifest_size = write(json.dumps(manifest).encode())
    descriptor.update(digest=manifest_digest, size=manifest_size)
    descriptor["annotations"] = {"org.opencontainers.image.ref.name": TAG}
    with open(os.path.join(layout, "index.json"), "w") as index_file:
        json.dump({"schemaVersion": 2, "manifests": [descriptor]}, index_file)


def _skopeo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=900)


def _v2(server: Server, path: str, key: str | None, method: str = "GET"):
    """A raw registry request; returns (status, headers, body bytes)."""
    request = urllib.request.Request(f"{server.url}/v2/{path}", method=method)
    if key is not None:
        token = base64.b64encode(f"anyone:{key}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


@pytest.fixture(scope="module")
def registries(server, tmp_path_factory):
    """Two servers with their own image stores: (registry, puller, work dir).

    Depends on the session `server`, which makes sure the shared cache has the default
    snapshot."""
    if shutil.which("skopeo") is None:
        pytest.skip("SKIPPED: skopeo is not installed (apt-get install skopeo)")
    work = tmp_path_factory.mktemp("registry")
    caches = []
    servers = []
    try:
        for _ in range(2):
            cache = tempfile.mkdtemp(prefix="dtn-images-", dir=os.path.dirname(server.image_cache.rstrip("/")))
            shutil.rmtree(cache)
            _copy_default_snapshot(server.image_cache, cache)
            caches.append(cache)
        registry = Server()
        registry.image_cache = caches[0]
        registry.start()
        servers.append(registry)
        puller = Server()
        puller.image_cache = caches[1]
        # The pulling server sends the registry's API key as its basic auth password.
        os.environ["DAYTONA_REGISTRY_AUTH"] = f"daytona:{registry.api_key}"
        try:
            puller.start()
        finally:
            del os.environ["DAYTONA_REGISTRY_AUTH"]
        servers.append(puller)
        yield registry, puller, str(work)
    finally:
        for instance in servers:
            instance.stop()
            instance.remove_data()
        for cache in caches:
            shutil.rmtree(cache, ignore_errors=True)


@pytest.fixture(scope="module")
def pushed(registries):
    """Pushes the test image with skopeo; yields (reference on the registry, layout pushed)."""
    registry, _, work = registries
    base = os.path.join(work, "default-oci")
    exported = subprocess.run(
        [registry.binary, "snapshot", "export", "daytona-default", "--format", "oci",
         "--image-cache", registry.image_cache, base],
        capture_output=True, text=True, timeout=600,
    )
    assert exported.returncode == 0, exported.stderr
    _add_layer(base)
    reference = f"127.0.0.1:{registry.port}/{REPOSITORY}:{TAG}"
    copied = _skopeo(
        "copy", "--quiet", "--dest-tls-verify=false", "--dest-creds", f"x:{registry.api_key}",
        f"oci:{base}:{TAG}", f"docker://{reference}",
    )
    assert copied.returncode == 0, copied.stderr + registry.log_tail()
    yield reference, base


def test_base_endpoint_requires_basic_auth(registries):
    registry, _, _ = registries
    status, headers, body = _v2(registry, "", None)
    assert status == 401
    assert headers["WWW-Authenticate"].startswith("Basic realm=")
    assert json.loads(body)["errors"][0]["code"] == "UNAUTHORIZED"
    assert _v2(registry, "", "dtn_not_a_key")[0] == 401
    status, headers, _ = _v2(registry, "", registry.api_key)
    assert status == 200
    assert headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_push_with_skopeo_stores_a_named_image(registries, pushed):
    registry, _, _ = registries
    status, _, body = _v2(registry, f"{REPOSITORY}/tags/list", registry.api_key)
    assert status == 200
    assert json.loads(body) == {"name": REPOSITORY, "tags": [TAG]}
    # The pushed image is an image of the store, which a snapshot can name.
    status, snapshot = registry.request(
        "POST", "/snapshots", {"name": "pushed", "imageName": f"{REPOSITORY}:{TAG}"}
    )
    assert status == 200, snapshot
    assert snapshot["state"] == "active"


def test_inspect_and_pull_back_are_byte_identical(registries, pushed):
    registry, _, work = registries
    reference, base = pushed
    creds = f"x:{registry.api_key}"
    inspected = _skopeo("inspect", "--tls-verify=false", "--creds", creds, f"docker://{reference}")
    assert inspected.returncode == 0, inspected.stderr
    info = json.loads(inspected.stdout)
    raw = _skopeo("inspect", "--raw", "--tls-verify=false", "--creds", creds, f"docker://{reference}")
    assert raw.returncode == 0, raw.stderr
    manifest_bytes = raw.stdout.encode()
    assert _sha256(manifest_bytes) == info["Digest"]
    manifest = json.loads(manifest_bytes)
    assert len(info["Layers"]) == len(manifest["layers"]) == 2

    pulled = os.path.join(work, "pulled")
    copied = _skopeo(
        "copy", "--quiet", "--preserve-digests", "--src-tls-verify=false", "--src-creds", creds,
        f"docker://{reference}", f"oci:{pulled}:{TAG}",
    )
    assert copied.returncode == 0, copied.stderr
    with open(os.path.join(pulled, "index.json")) as index_file:
        descriptor = json.load(index_file)["manifests"][0]
    assert descriptor["digest"] == info["Digest"]
    blobs = os.path.join(pulled, "blobs", "sha256")
    with open(os.path.join(blobs, descriptor["digest"][7:]), "rb") as manifest_file:
        assert manifest_file.read() == manifest_bytes
    for blob in [manifest["config"]] + manifest["layers"]:
        assert _file_digest(os.path.join(blobs, blob["digest"][7:])) == blob["digest"]
    # The configuration (with the diff IDs of the layers' content) is the one pushed.
    with open(os.path.join(blobs, manifest["config"]["digest"][7:]), "rb") as pulled_config:
        with open(os.path.join(base, "blobs", "sha256", manifest["config"]["digest"][7:]), "rb") as pushed_config:
            assert pulled_config.read() == pushed_config.read()
    shutil.rmtree(pulled)


def test_manifest_with_missing_blobs_rejected(registries):
    registry, _, _ = registries
    missing = "sha256:" + "0" * 64
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": missing, "size": 2},
        "layers": [],
    }).encode()
    request = urllib.request.Request(f"{registry.url}/v2/apps/broken/manifests/v1", data=manifest, method="PUT")
    request.add_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
    token = base64.b64encode(f"x:{registry.api_key}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with pytest.raises(urllib.error.HTTPError) as raised:
        urllib.request.urlopen(request, timeout=60)
    assert raised.value.code == 400
    assert json.loads(raised.value.read())["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"


def test_pull_by_reference_starts_sandbox(registries, pushed):
    _, puller, _ = registries
    reference, _ = pushed
    status, snapshot = puller.request("POST", "/snapshots", {"name": "from-registry", "imageName": reference})
    assert status == 200, f"{snapshot}\n{puller.log_tail()}"
    assert snapshot["imageName"] == reference

    client = Daytona(DaytonaConfig(api_key=puller.api_key, api_url=puller.api_url))
    sandbox = client.create(CreateSandboxFromSnapshotParams(snapshot="from-registry"), timeout=120)
    try:
        result = sandbox.process.exec("cat /srv/registry/hello.txt")
        assert result.exit_code == 0, result.result
        assert result.result.encode() == HELLO
    finally:
        client.delete(sandbox)


def test_cli_pull_into_an_image_store(registries, pushed):
    registry, puller, _ = registries
    reference, _ = pushed
    env = dict(os.environ, DAYTONA_REGISTRY_AUTH=f"x:{registry.api_key}")
    env.pop("DAYTONA_API_KEY", None)
    result = subprocess.run(
        [puller.binary, "snapshot", "pull", reference, "--name", "cli-pulled:v1",
         "--image-cache", puller.image_cache],
        capture_output=True, text=True, timeout=600, env=env,
    )
    assert result.returncode == 0, result.stderr
    name, digest = result.stdout.split()
    assert name == "cli-pulled:v1"
    inspected = _skopeo("inspect", "--raw", "--tls-verify=false", "--creds", f"x:{registry.api_key}", f"docker://{reference}")
    assert _sha256(inspected.stdout.encode()) == digest

    without_credentials = dict(env)
    del without_credentials["DAYTONA_REGISTRY_AUTH"]
    refused = subprocess.run(
        [puller.binary, "snapshot", "pull", reference, "--name", "cli-refused:v1",
         "--image-cache", puller.image_cache],
        capture_output=True, text=True, timeout=600, env=without_credentials,
    )
    assert refused.returncode != 0
    assert "401" in refused.stderr
