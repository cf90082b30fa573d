"""Organizations, API keys, limits, events, signed file URLs, metrics and the routes of
features that are not available yet, through the official SDK and its generated client.

The tests run against a server of their own: its starts hang while `hang_file` exists, and it
samples sandbox metrics every second.
"""

import io
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime, timedelta, timezone

import pytest
from daytona import (
    CreateSecretParams,
    CreateSnapshotParams,
    Daytona,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaNotFoundError,
    DaytonaRateLimitError,
)
from daytona_api_client import ApiClient, ApiKeysApi, Configuration, ConfigApi, CreateApiKey, OrganizationsApi
from daytona_api_client.exceptions import (
    BadRequestException,
    ForbiddenException,
    NotFoundException,
    UnauthorizedException,
)
from daytona_server import Server


@pytest.fixture(scope="module")
def orgs_server():
    hang_dir = tempfile.mkdtemp(prefix="dtn-orgs-", dir="/tmp")
    instance = Server(["--test-hang-start-file", os.path.join(hang_dir, "hang"), "--metrics-interval", "1"])
    instance.hang_file = os.path.join(hang_dir, "hang")
    try:
        instance.start()
        yield instance
    finally:
        if os.path.exists(instance.hang_file):
            os.remove(instance.hang_file)
        instance.stop()
        instance.remove_data()
        shutil.rmtree(hang_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def admin(orgs_server):
    return Daytona(DaytonaConfig(api_key=orgs_server.api_key, api_url=orgs_server.api_url))


def generated_client(server, key):
    configuration = Configuration(host=server.api_url)
    configuration.access_token = key
    client = ApiClient(configuration)
    client.default_headers["Authorization"] = f"Bearer {key}"
    return client


def new_organization(server, permissions=("write:sandboxes", "delete:sandboxes", "manage:api_keys")):
    """Creates an organization and a key for it; returns (organization id, key)."""
    name = f"org-{uuid.uuid4().hex[:8]}"
    status, org = server.request("POST", "/organizations", {"name": name, "defaultRegionId": "local"})
    assert status == 201, org
    status, key = server.request(
        "POST",
        "/api-keys",
        {"name": "member", "permissions": list(permissions)},
        headers={"X-Daytona-Organization-ID": org["id"]},
    )
    assert status == 201, key
    return org["id"], key["value"]


def client_for(server, key):
    return Daytona(DaytonaConfig(api_key=key, api_url=server.api_url))


def test_api_keys_through_generated_client(orgs_server):
    keys = ApiKeysApi(generated_client(orgs_server, orgs_server.api_key))
    created = keys.create_api_key(CreateApiKey(name="sdk-key", permissions=["write:sandboxes"]))
    assert created.value.startswith("dtn_")
    assert created.permissions == ["write:sandboxes"]
    listed = {key.name: key for key in keys.list_api_keys()}
    assert "sdk-key" in listed
    assert "admin" in listed
    assert created.value not in listed["sdk-key"].value

    own = ApiKeysApi(generated_client(orgs_server, created.value))
    assert own.get_current_api_key().name == "sdk-key"
    keys.delete_api_key("sdk-key")
    # The revocation is effective at once, although the key was just used.
    with pytest.raises(UnauthorizedException):
        own.get_current_api_key()
    with pytest.raises(NotFoundException):
        keys.get_api_key("sdk-key")


def test_organizations_through_generated_client(orgs_server):
    organizations = OrganizationsApi(generated_client(orgs_server, orgs_server.api_key))
    names = [org.name for org in organizations.list_organizations()]
    assert "default" in names
    org_id, key = new_organization(orgs_server)
    fetched = organizations.get_organization(org_id)
    assert fetched.id == org_id
    assert fetched.suspended is False
    usage = organizations.get_organization_usage_overview(org_id)
    assert usage.region_usage[0].current_cpu_usage == 0

    member = OrganizationsApi(generated_client(orgs_server, key))
    assert [org.id for org in member.list_organizations()] == [org_id]
    default_id = next(org.id for org in organizations.list_organizations() if org.name == "default")
    with pytest.raises(NotFoundException):
        member.get_organization(default_id)
    with pytest.raises(ForbiddenException):
        member.delete_organization(org_id)
    status, body = orgs_server.request("POST", "/organizations", {"name": "nope"}, key=key)
    assert status == 403, body


def test_cross_organization_isolation(orgs_server, admin):
    _, key = new_organization(orgs_server)
    other = client_for(orgs_server, key)
    sandbox = admin.create()
    try:
        with pytest.raises(DaytonaNotFoundError):
            other.get(sandbox.id)
        with pytest.raises(DaytonaNotFoundError):
            other.get(sandbox.name)
        assert sandbox.id not in [item.id for item in other.list()]
        status, _ = orgs_server.request("DELETE", f"/sandbox/{sandbox.id}", key=key)
        assert status == 404
        status, _ = orgs_server.request("POST", f"{orgs_server.url}/toolbox/{sandbox.id}/process/execute", {"command": "id"}, key=key)
        assert status == 404
        # The owner still has it, untouched.
        assert admin.get(sandbox.id).state == "started"

        theirs = other.create()
        try:
            with pytest.raises(DaytonaNotFoundError):
                admin.get(theirs.id)
            assert theirs.process.exec("echo mine").result.strip() == "mine"
        finally:
            other.delete(theirs)
    finally:
        admin.delete(sandbox)


def test_limit_raises_rate_limit_error(orgs_server):
    org_id, key = new_organization(orgs_server)
    status, body = orgs_server.request("PATCH", f"/organizations/{org_id}/quota", {"maxSandboxes": 1})
    assert status == 200, body
    limited = client_for(orgs_server, key)
    first = limited.create()
    try:
        with pytest.raises(DaytonaRateLimitError) as refused:
            limited.create()
        headers = {name.lower(): value for name, value in refused.value.headers.items()}
        assert refused.value.status_code == 429
        assert headers["retry-after"] == "5"
        assert headers["x-ratelimit-limit-sandboxes"] == "1"
        assert headers["x-ratelimit-remaining-sandboxes"] == "0"
        assert "limit of 1 sandboxes" in str(refused.value)
    finally:
        limited.delete(first)
    # The delete returned only once the share was free.
    second = limited.create()
    limited.delete(second)


def test_stopped_sandbox_frees_its_share(orgs_server):
    org_id, key = new_organization(orgs_server)
    orgs_server.request("PATCH", f"/organizations/{org_id}/quota", {"maxSandboxes": 1})
    limited = client_for(orgs_server, key)
    first = limited.create()
    try:
        first.stop()
        second = limited.create()
        try:
            # And the stopped one cannot start while the other runs.
            with pytest.raises(DaytonaRateLimitError):
                first.start()
        finally:
            limited.delete(second)
        first.start()
        assert first.state == "started"
    finally:
        limited.delete(first)


def test_concurrent_creates_cannot_overshoot(orgs_server):
    org_id, key = new_organization(orgs_server)
    orgs_server.request("PATCH", f"/organizations/{org_id}/quota", {"maxSandboxes": 2})
    limited = client_for(orgs_server, key)
    results = []

    def create():
        try:
            results.append(limited.create())
        except DaytonaRateLimitError as error:
            results.append(error)

    threads = [threading.Thread(target=create) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    created = [r for r in results if not isinstance(r, Exception)]
    try:
        assert len(created) == 2, results
        assert len(results) == 5
    finally:
        for sandbox in created:
            limited.delete(sandbox)


def test_event_ends_wait_before_next_poll(orgs_server, admin):
    sandbox = admin.create()
    try:
        sandbox.stop()
        open(orgs_server.hang_file, "w").close()
        try:
            # Another client starts the sandbox; its start hangs while the file exists.
            starter = threading.Thread(target=lambda: orgs_server.request("POST", f"/sandbox/{sandbox.id}/start"))
            starter.start()
            deadline = time.monotonic() + 10
            while orgs_server.request("GET", f"/sandbox/{sandbox.id}")[1]["state"] != "starting":
                assert time.monotonic() < deadline, "the start never began"
                time.sleep(0.05)

            waited = {}

            def wait():
                began = time.monotonic()
                sandbox.wait_for_sandbox_start(timeout=30)
                waited["end"] = time.monotonic()
                waited["began"] = began

            waiter = threading.Thread(target=wait)
            waiter.start()
            # The SDK reads the state at once (starting) and then polls once a second. The
            # start is let go just after its first poll, so polling alone could not see
            # `started` before the second poll, a second later.
            time.sleep(1.2)
            released = time.monotonic()
            os.remove(orgs_server.hang_file)
            waiter.join(timeout=30)
            starter.join(timeout=30)
        finally:
            if os.path.exists(orgs_server.hang_file):
                os.remove(orgs_server.hang_file)
        assert sandbox.state == "started"
        after_release = waited["end"] - released
        assert after_release < 0.5, f"the wait ended {after_release:.2f} s after the start was let go"
        assert waited["end"] - waited["began"] < 1.9
    finally:
        admin.delete(sandbox)


def test_stop_then_start_is_fast(admin):
    sandbox = admin.create()
    try:
        began = time.monotonic()
        sandbox.stop()
        sandbox.start()
        elapsed = time.monotonic() - began
        assert sandbox.state == "started"
        assert elapsed < 1.0, f"stop and start took {elapsed:.2f} s"
    finally:
        admin.delete(sandbox)


def http(method, url, data=None, headers=None):
    request = urllib.request.Request(url, data=data, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def multipart(field, filename, content):
    boundary = uuid.uuid4().hex
    body = io.BytesIO()
    body.write(f"--{boundary}\r\n".encode())
    body.write(f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'.encode())
    body.write(b"Content-Type: application/octet-stream\r\n\r\n")
    body.write(content)
    body.write(f"\r\n--{boundary}--\r\n".encode())
    return body.getvalue(), {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def test_download_url_needs_no_key(admin):
    sandbox = admin.create()
    try:
        sandbox.fs.upload_file(b"signed \x00 bytes\n", "/home/daytona/signed.bin")
        url = sandbox.download_url("/home/daytona/signed.bin", 60)
        assert "signature=v1_" in url
        status, content = http("GET", url)
        assert status == 200, content
        assert content == b"signed \x00 bytes\n"

        never = sandbox.download_url("/home/daytona/signed.bin", 0)
        assert "expires=0" in never
        assert http("GET", never)[0] == 200

        tampered = url.replace("signed.bin", "other.bin")
        assert http("GET", tampered)[0] == 401
        unsigned = url.split("&signature=")[0]
        assert http("GET", unsigned)[0] == 401
    finally:
        admin.delete(sandbox)


def test_upload_url_round_trip(admin):
    sandbox = admin.create()
    try:
        url = sandbox.upload_url("/home/daytona/uploaded.txt")
        body, headers = multipart("file", "uploaded.txt", b"uploaded without a key\n")
        status, content = http("POST", url, body, headers)
        if status == 404 and b"upload-v2" in content:
            pytest.skip("the daemon has no POST /files/upload-v2 yet")
        assert status == 200, content
        assert sandbox.fs.download_file("/home/daytona/uploaded.txt") == b"uploaded without a key\n"
        # A download URL cannot be used to upload.
        download = sandbox.download_url("/home/daytona/uploaded.txt")
        assert http("POST", download, body, headers)[0] == 401
    finally:
        admin.delete(sandbox)


def test_rotate_signing_key_invalidates_old_urls(admin):
    sandbox = admin.create()
    try:
        sandbox.fs.upload_file(b"rotate me\n", "/home/daytona/rotate.txt")
        old = sandbox.download_url("/home/daytona/rotate.txt")
        assert http("GET", old)[0] == 200
        sandbox.rotate_signing_key()
        status, body = http("GET", old)
        assert status == 401, body
        assert b"rotated" in body
        fresh = sandbox.download_url("/home/daytona/rotate.txt")
        assert http("GET", fresh) == (200, b"rotate me\n")
    finally:
        admin.delete(sandbox)


def test_signed_url_survives_stop_and_start(admin):
    sandbox = admin.create()
    try:
        sandbox.fs.upload_file(b"kept\n", "/home/daytona/kept.txt")
        url = sandbox.download_url("/home/daytona/kept.txt", 0)
        sandbox.stop()
        status, body = http("GET", url)
        assert status == 400
        assert b"stopped" in body
        sandbox.start()
        assert http("GET", url) == (200, b"kept\n")
    finally:
        admin.delete(sandbox)


def test_config_parses_in_generated_client(orgs_server):
    config = ConfigApi(generated_client(orgs_server, orgs_server.api_key)).config_controller_get_config()
    assert config.analytics_api_url is None
    assert config.proxy_toolbox_url == f"{orgs_server.url}/toolbox"


def test_get_metrics(admin):
    sandbox = admin.create()
    try:
        sandbox.process.exec("python3 -c 'x = bytearray(64 << 20); import time; time.sleep(3)'")
        deadline = time.monotonic() + 15
        while True:
            samples = sandbox.get_metrics()
            if len(samples) >= 2:
                break
            assert time.monotonic() < deadline, f"only {len(samples)} samples"
            time.sleep(0.5)
        latest = samples[-1]
        assert latest.cpu_count == sandbox.cpu
        assert latest.mem_total == sandbox.memory << 30
        assert 0 < latest.mem_used < latest.mem_total
        assert any(0.0 <= sample.cpu_used_pct <= 100.0 for sample in samples)
        assert samples == sorted(samples, key=lambda s: s.timestamp)

        # A window before the sandbox existed has no samples.
        long_ago = datetime.now(timezone.utc) - timedelta(days=1)
        assert sandbox.get_metrics(long_ago - timedelta(hours=1), long_ago) == []
    finally:
        admin.delete(sandbox)


def test_unavailable_sandbox_features_raise_bad_request(admin):
    sandbox = admin.create()
    try:
        calls = {
            "update_secrets": lambda: sandbox.update_secrets({"TOKEN": "secret-name"}),
        }
        for name, call in calls.items():
            with pytest.raises(DaytonaBadRequestError) as raised:
                call()
            assert "not available yet" in str(raised.value), f"{name}: {raised.value}"
        # The sandbox is unchanged by the refusals.
        assert admin.get(sandbox.id).state == "started"
    finally:
        admin.delete(sandbox)


def test_network_settings_are_available(admin):
    # The suite's servers run without networking (loopback only), so the settings are stored;
    # test_network.py checks that they are enforced.
    sandbox = admin.create()
    try:
        sandbox.update_network_settings(network_allow_list="198.51.100.0/24", domain_allow_list="*.example.com")
        assert sandbox.network_allow_list == "198.51.100.0/24"
        assert sandbox.domain_allow_list == "*.example.com"
        sandbox.update_network_settings(network_block_all=True)
        assert admin.get(sandbox.id).network_block_all is True
        with pytest.raises(DaytonaBadRequestError) as raised:
            sandbox.update_network_settings(network_allow_list="10.0.0.0/33")
        assert "invalid CIDR" in str(raised.value)
    finally:
        admin.delete(sandbox)


def test_computer_use_raises_bad_request(admin):
    sandbox = admin.create()
    try:
        computer_use = sandbox.computer_use
        calls = {
            "start": computer_use.start,
            "get_status": computer_use.get_status,
            "mouse.click": lambda: computer_use.mouse.click(10, 10),
            "keyboard.type": lambda: computer_use.keyboard.type("hi"),
            "screenshot.take_full_screen": computer_use.screenshot.take_full_screen,
            "display.get_info": computer_use.display.get_info,
        }
        for name, call in calls.items():
            with pytest.raises(DaytonaBadRequestError) as raised:
                call()
            assert "computer use is not available yet" in str(raised.value), f"{name}: {raised.value}"
    finally:
        admin.delete(sandbox)


def test_missing_images_raise_bad_request(admin):
    default_snapshot = admin.snapshot.list().items[0]
    # An image that was never imported: the message says how to import it.
    with pytest.raises(DaytonaBadRequestError) as raised:
        admin.snapshot.create(CreateSnapshotParams(name="s", image="python:3.12"))
    assert "import" in str(raised.value)
    # The server's own snapshot cannot be deleted or activated.
    with pytest.raises(DaytonaBadRequestError):
        admin.snapshot.delete(default_snapshot)
    with pytest.raises(DaytonaNotFoundError):
        admin.snapshot.delete("no-such-snapshot")


def test_unavailable_services_without_error_translation(admin):
    # These SDK methods do not translate errors: the generated client's exception for the 400
    # arrives as it is.
    default_snapshot = admin.snapshot.list().items[0]
    calls = {
        "secret.list": admin.secret.list,
        "secret.create": lambda: admin.secret.create(CreateSecretParams(name="TOKEN", value="v")),
        "secret.delete": lambda: admin.secret.delete("s1"),
        "warm_pool.list": admin.warm_pool.list,
        "warm_pool.create": lambda: admin.warm_pool.create(default_snapshot.name, 1),
        "warm_pool.delete": lambda: admin.warm_pool.delete("p1"),
    }
    for name, call in calls.items():
        with pytest.raises(BadRequestException) as raised:
            call()
        body = raised.value.body
        assert "not available yet" in body or "cannot be managed" in body, f"{name}: {body}"
