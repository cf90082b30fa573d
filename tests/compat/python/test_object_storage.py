"""Object storage push access through the official SDK.

The SDK uploads the local files of a declarative `Image` (`add_local_dir`, `add_local_file`)
with `SnapshotService.process_image_context`: it requests `GET /object-storage/push-access` for
temporary S3 credentials and puts a tar at `<organizationId>/<hash>/context.tar` with
obstore, which accepts only https and the system's trusted CAs. scripts/test installs the
server's CA into the system trust store; without it these tests skip.
"""

import os
import socket
import ssl
import tarfile
from urllib.parse import urlparse

import pytest

BUILDS_BUCKET = "daytona-volume-builds"


@pytest.fixture(scope="module")
def push_access(daytona):
    return daytona._object_storage_api.get_push_access()


def require_trusted(storage_url: str):
    """Skips unless the system trust store accepts the object storage's certificate."""
    url = urlparse(storage_url)
    context = ssl.create_default_context()
    try:
        with socket.create_connection((url.hostname, url.port), timeout=10) as raw:
            with context.wrap_socket(raw, server_hostname=url.hostname):
                pass
    except ssl.SSLCertVerificationError as error:
        pytest.skip(
            f"SKIPPED: the system does not trust the object storage's CA ({error.verify_message}); "
            "install it with scripts/test or as the README describes"
        )


def stored_object(server, organization_id: str, key_hash: str) -> str:
    return os.path.join(server.data_dir, "objects", BUILDS_BUCKET, organization_id, key_hash, "context.tar")


def test_push_access_shape(server, push_access):
    status, body = server.request("GET", "/object-storage/push-access")
    assert status == 200, body
    for field in ("accessKey", "secret", "sessionToken", "storageUrl", "organizationId", "bucket", "region"):
        assert isinstance(body[field], str) and body[field], field
    assert body["bucket"] == BUILDS_BUCKET
    assert body["storageUrl"].startswith("https://127.0.0.1:")
    assert push_access.organization_id == body["organizationId"]
    assert push_access.access_key != body["accessKey"], "each call issues new credentials"


def test_push_access_needs_a_key(server):
    status, _ = server.request("GET", "/object-storage/push-access", key=None)
    assert status == 401


def test_image_context_upload(daytona, server, push_access, tmp_path):
    from daytona import Image
    from daytona._sync.snapshot import SnapshotService

    require_trusted(push_access.storage_url)
    context = tmp_path / "app"
    (context / "src").mkdir(parents=True)
    (context / "src" / "main.py").write_text("print('hello')\n")
    (context / "requirements.txt").write_text("requests\n")
    single = tmp_path / "config.toml"
    single.write_text("debug = true\n")
    image = Image.debian_slim("3.12").add_local_dir(str(context), "/app").add_local_file(str(single), "/etc/app.toml")

    hashes = SnapshotService.process_image_context(daytona._object_storage_api, image)

    assert len(hashes) == 2
    directory_tar = stored_object(server, push_access.organization_id, hashes[0])
    assert os.path.isfile(directory_tar), f"{directory_tar} is missing"
    archive_base = str(context).lstrip("/")
    with tarfile.open(directory_tar) as tar:
        names = tar.getnames()
        assert f"{archive_base}/src/main.py" in names, names
        assert tar.extractfile(f"{archive_base}/src/main.py").read() == b"print('hello')\n"
    assert os.path.isfile(stored_object(server, push_access.organization_id, hashes[1]))

    # A second upload of the same content finds the object (HEAD) and sends nothing again.
    before = os.stat(directory_tar).st_mtime_ns
    assert SnapshotService.process_image_context(daytona._object_storage_api, image) == hashes
    assert os.stat(directory_tar).st_mtime_ns == before


def test_other_organization_prefix_denied(server, push_access):
    from daytona._sync.object_storage import ObjectStorage
    from obstore.exceptions import PermissionDeniedError

    require_trusted(push_access.storage_url)
    storage = ObjectStorage(
        push_access.storage_url,
        push_access.access_key,
        push_access.secret,
        push_access.session_token,
        push_access.bucket,
        region=push_access.region,
    )
    with pytest.raises(PermissionDeniedError, match="403"):
        storage.store.put("another-organization/x/context.tar", b"not yours")
    assert not os.path.exists(os.path.join(server.data_dir, "objects", BUILDS_BUCKET, "another-organization"))
