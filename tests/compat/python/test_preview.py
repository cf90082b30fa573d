"""Preview URLs through the preview proxy, with the official SDK, curl and a WebSocket client.

An app (tests/support/preview_app.py) runs inside the sandbox on 0.0.0.0:8080, 127.0.0.1:8081
and [::1]:8082. Python's resolver does not map `*.localhost` to loopback as curl and browsers
do, so Python clients connect to the proxy's address and send the preview host in `Host`.
"""

import asyncio
import json
import os
import shutil
import subprocess
import time
import urllib.parse

import pytest
from daytona import SessionExecuteRequest

APP = os.path.join(os.path.dirname(__file__), "..", "..", "support", "preview_app.py")
APP_PORTS = {8080: "0.0.0.0", 8081: "127.0.0.1", 8082: "::1"}

if shutil.which("curl") is None:
    pytest.skip("SKIPPED: curl is not installed", allow_module_level=True)


def curl(*args, timeout=30):
    """Runs curl with `-s -i` and returns (status, headers as a list of (name, value), body)."""
    result = subprocess.run(
        ["curl", "-s", "-i", "--max-time", str(timeout), *args],
        capture_output=True,
        timeout=timeout + 5,
        check=False,
    )
    assert result.returncode == 0, f"curl {args} failed: {result.stderr.decode()}"
    raw = result.stdout
    # Skip interim responses, such as 100 Continue.
    while raw.startswith(b"HTTP/") and b" 100 " in raw.split(b"\r\n", 1)[0]:
        raw = raw.split(b"\r\n\r\n", 1)[1]
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = [tuple(part.strip() for part in line.split(":", 1)) for line in lines[1:] if ":" in line]
    return status, headers, body


def header_values(headers, name):
    return [value for key, value in headers if key.lower() == name.lower()]


def wait_until(check, timeout=30, message="condition"):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except AssertionError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {message}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def app(sandbox):
    """The sandbox with the app listening on its three ports."""
    with open(APP, "rb") as source:
        sandbox.fs.upload_file(source.read(), "/tmp/preview_app.py")
    sandbox.process.create_session("preview-apps")
    for port, host in APP_PORTS.items():
        sandbox.process.execute_session_command(
            "preview-apps",
            SessionExecuteRequest(command=f"python3 /tmp/preview_app.py {host} {port}", run_async=True),
        )
    link = sandbox.get_preview_link(8080)
    for port in APP_PORTS:
        url = sandbox.get_preview_link(port).url
        wait_until(
            lambda url=url: curl("-H", f"x-daytona-preview-token: {link.token}", f"{url}/hello")[0] == 200,
            message=f"the app on port {port}",
        )
    return sandbox


def test_preview_link_shape(app, server):
    link = app.get_preview_link(8080)
    assert link.url == f"http://8080-{app.id}.localhost:{server.preview_port}"
    assert link.sandbox_id == app.id
    assert link.token
    status, config = server.request("GET", "/config")
    assert status == 200
    assert config["proxyTemplateUrl"] == f"http://{{{{PORT}}}}-{{{{sandboxId}}}}.localhost:{server.preview_port}"


def test_preview_port_invalid(app, server):
    for port in ["0", "65536", "web"]:
        status, body = server.request("GET", f"/sandbox/{app.id}/ports/{port}/preview-url")
        assert status == 400, body
        assert "port" in body["message"]


def test_private_preview_without_token_is_401(app):
    url = app.get_preview_link(8080).url
    status, headers, body = curl(f"{url}/hello")
    assert status == 401
    assert not header_values(headers, "location")
    error = json.loads(body)
    assert error["statusCode"] == 401
    assert error["code"] == "UNAUTHORIZED"
    assert "x-daytona-preview-token" in error["message"]

    status, headers, body = curl("-H", "Accept: text/html,application/xhtml+xml", f"{url}/hello")
    assert status == 401
    assert not header_values(headers, "location")
    assert header_values(headers, "content-type")[0].startswith("text/html")
    assert b"needs a token" in body
    assert b"x-daytona-preview-token" in body


def test_token_in_header(app):
    link = app.get_preview_link(8080)
    status, _, body = curl("-H", f"x-daytona-preview-token: {link.token}", f"{link.url}/headers")
    assert status == 200
    seen = json.loads(body)
    assert "x-daytona-preview-token" not in seen["headers"]
    assert seen["headers"]["host"] == urllib.parse.urlsplit(link.url).netloc


def test_token_in_query_sets_cookie(app, tmp_path):
    link = app.get_preview_link(8080)
    jar = tmp_path / "cookies"
    status, headers, body = curl(
        "-c", str(jar), f"{link.url}/headers?a=1&DAYTONA_SANDBOX_AUTH_KEY={link.token}"
    )
    assert status == 200
    assert json.loads(body)["target"] == "/headers?a=1"
    cookie = header_values(headers, "set-cookie")
    assert len(cookie) == 1
    assert "HttpOnly" in cookie[0]

    status, _, body = curl("-b", str(jar), f"{link.url}/headers")
    assert status == 200
    # The proxy's cookie is removed before the request reaches the app.
    assert "cookie" not in json.loads(body)["headers"]


def test_api_key_opens_preview(app, server):
    url = app.get_preview_link(8080).url
    status, _, _ = curl("-H", f"Authorization: Bearer {server.api_key}", f"{url}/hello")
    assert status == 200
    status, _, _ = curl("-H", "Authorization: Bearer dtn_not_a_key", f"{url}/hello")
    assert status == 401


def test_every_loopback_address(app):
    token = app.get_preview_link(8080).token
    for port in APP_PORTS:
        url = app.get_preview_link(port).url
        status, _, body = curl("-H", f"x-daytona-preview-token: {token}", f"{url}/hello")
        assert status == 200, port
        assert body == f"hello from port {port}\n".encode()


def test_closed_port_is_502(app):
    link = app.get_preview_link(8090)
    status, _, body = curl("-H", f"x-daytona-preview-token: {link.token}", f"{link.url}/")
    assert status == 502
    assert "nothing listens on port 8090" in json.loads(body)["message"]


def test_token_of_other_sandbox_rejected(app, daytona):
    other = daytona.create()
    try:
        other_token = other.get_preview_link(8080).token
        assert other_token != app.get_preview_link(8080).token
        url = app.get_preview_link(8080).url
        for args in (
            ["-H", f"x-daytona-preview-token: {other_token}", f"{url}/hello"],
            [f"{url}/hello?DAYTONA_SANDBOX_AUTH_KEY={other_token}"],
            ["-b", f"daytona-preview-{app.id}={other_token}", f"{url}/hello"],
        ):
            assert curl(*args)[0] == 401, args
        signed = other.create_signed_preview_url(8080, expires_in_seconds=60)
        assert curl("-H", f"x-daytona-preview-token: {signed.token}", f"{url}/hello")[0] == 401
    finally:
        daytona.delete(other)


def test_path_style(app, server):
    token = app.get_preview_link(8080).token
    base = f"http://127.0.0.1:{server.preview_port}/preview/{app.id}/8080"
    status, _, body = curl("-H", f"x-daytona-preview-token: {token}", f"{base}/headers?x=1")
    assert status == 200
    assert json.loads(body)["target"] == "/headers?x=1"
    assert curl(f"{base}/hello")[0] == 401


def test_signed_url_works_until_expired(app):
    signed = app.create_signed_preview_url(8080, expires_in_seconds=120)
    assert signed.port == 8080
    assert signed.sandbox_id == app.id
    assert signed.token in signed.url
    status, _, body = curl(f"{signed.url}/hello")
    assert status == 200
    assert body == b"hello from port 8080\n"
    # The signed token also opens the sandbox's usual URL, and leaves a cookie there.
    url = app.get_preview_link(8080).url
    assert curl(f"{url}/hello?DAYTONA_SANDBOX_AUTH_KEY={signed.token}")[0] == 200
    # It opens only its own port.
    assert curl(f"{app.get_preview_link(8081).url}/hello?DAYTONA_SANDBOX_AUTH_KEY={signed.token}")[0] == 401

    app.expire_signed_preview_url(8080, signed.token)
    status, _, body = curl(f"{signed.url}/hello")
    assert status == 401
    assert "expired" in json.loads(body)["message"]
    assert curl(f"{url}/hello?DAYTONA_SANDBOX_AUTH_KEY={signed.token}")[0] == 401


def test_signed_url_cookie(app, tmp_path):
    signed = app.create_signed_preview_url(8080, expires_in_seconds=120)
    url = app.get_preview_link(8080).url
    jar = tmp_path / "cookies"
    assert curl("-c", str(jar), f"{url}/hello?DAYTONA_SANDBOX_AUTH_KEY={signed.token}")[0] == 200
    assert curl("-b", str(jar), f"{url}/hello")[0] == 200
    app.expire_signed_preview_url(8080, signed.token)
    assert curl("-b", str(jar), f"{url}/hello")[0] == 401


def test_signed_url_expires_by_time(app):
    signed = app.create_signed_preview_url(8080, expires_in_seconds=1)
    # Allow for the second boundary: the URL lasts at least until the next whole second.
    time.sleep(2.1)
    assert curl(f"{signed.url}/hello")[0] == 401


def test_signed_url_expiry_bounds(app, server):
    for seconds in ["0", "86401", "-1", "soon"]:
        status, body = server.request(
            "GET", f"/sandbox/{app.id}/ports/8080/signed-preview-url?expiresInSeconds={seconds}"
        )
        assert status == 400, (seconds, body)
        assert "expiresInSeconds" in body["message"]
    status, body = server.request("GET", f"/sandbox/{app.id}/ports/8080/signed-preview-url")
    assert status == 200
    status, body = server.request("GET", f"/sandbox/{app.id}/ports/8080/signed-preview-url?expiresInSeconds=86400")
    assert status == 200
    status, body = server.request("POST", f"/sandbox/{app.id}/ports/8080/signed-preview-url/{'0' * 48}/expire")
    assert status == 404


def test_set_public(app, server):
    url = app.get_preview_link(8080).url
    app.set_public(True)
    try:
        assert app.public is True
        status, sandbox = server.request("GET", f"/sandbox/{app.id}")
        assert sandbox["public"] is True
        status, _, body = curl(f"{url}/hello")
        assert status == 200
        assert body == b"hello from port 8080\n"
    finally:
        app.set_public(False)
    assert curl(f"{url}/hello")[0] == 401
    status, body = server.request("POST", f"/sandbox/{app.id}/public/maybe")
    assert status == 400


def test_cors_headers_not_duplicated(app):
    """B25: the app's CORS headers pass untouched; the proxy adds only absent ones."""
    link = app.get_preview_link(8080)
    token = ["-H", f"x-daytona-preview-token: {link.token}"]
    status, headers, _ = curl(*token, f"{link.url}/cors")
    assert status == 200
    assert header_values(headers, "access-control-allow-origin") == ["*"]

    status, headers, _ = curl(*token, "-H", "Origin: https://app.example", f"{link.url}/cors")
    assert header_values(headers, "access-control-allow-origin") == ["*"]

    status, headers, _ = curl(*token, "-H", "Origin: https://app.example", f"{link.url}/hello")
    assert status == 200
    assert header_values(headers, "access-control-allow-origin") == ["https://app.example"]
    # No credentials: a page of another origin must not read a private preview with the
    # token cookie that the browser holds for it.
    assert header_values(headers, "access-control-allow-credentials") == []

    # A preflight, which browsers send without the token, gets the method and headers it requests.
    preflight = [
        "-X", "OPTIONS",
        "-H", "Origin: https://app.example",
        "-H", "Access-Control-Request-Method: GET",
        "-H", "Access-Control-Request-Headers: cache-control, x-daytona-preview-token",
    ]
    status, headers, _ = curl(*preflight, f"{link.url}/hello")
    assert status == 204
    assert header_values(headers, "access-control-allow-origin") == ["https://app.example"]
    assert header_values(headers, "access-control-allow-headers") == ["cache-control, x-daytona-preview-token"]
    assert header_values(headers, "access-control-allow-methods") == ["GET"]

    # An authorized preflight to a path where the app handles preflights gets the app's response.
    status, headers, _ = curl(*preflight, *token, f"{link.url}/cors")
    assert status == 204
    assert header_values(headers, "access-control-allow-origin") == ["*"]
    assert header_values(headers, "access-control-allow-headers") == ["x-app-header"]


def test_http2_prior_knowledge(app):
    link = app.get_preview_link(8080)
    result = subprocess.run(
        ["curl", "-s", "-i", "--http2-prior-knowledge", "--max-time", "20",
         "-H", f"x-daytona-preview-token: {link.token}", f"{link.url}/hello"],
        capture_output=True, timeout=30, check=True,
    )
    assert result.stdout.startswith(b"HTTP/2 200"), result.stdout[:200]
    assert result.stdout.endswith(b"hello from port 8080\n")


def test_server_sent_events_not_buffered(app):
    link = app.get_preview_link(8080)
    process = subprocess.Popen(
        ["curl", "-s", "-N", "--max-time", "20", "-H", f"x-daytona-preview-token: {link.token}", f"{link.url}/sse"],
        stdout=subprocess.PIPE,
    )
    try:
        started = time.monotonic()
        arrivals = []
        for line in process.stdout:
            if line.startswith(b"data: "):
                arrivals.append((time.monotonic() - started, line.strip()))
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert [data for _, data in arrivals] == [f"data: event {i}".encode() for i in range(5)]
    # The app sends an event every 300 ms: each arrives on its own, not all at the end.
    assert arrivals[-1][0] - arrivals[0][0] > 0.9, arrivals


def connect(link, headers=None, query=""):
    """Opens a WebSocket to `/ws` of the preview URL `link`: the URL names the preview host, and
    the TCP connection goes to the proxy on 127.0.0.1."""
    import websockets

    parts = urllib.parse.urlsplit(link.url)
    url = f"ws://{parts.netloc}/ws{query}"
    return websockets.connect(
        url, host="127.0.0.1", port=parts.port, additional_headers=headers or {}, open_timeout=20
    )


def test_websocket_frames_ping_and_close(app):
    link = app.get_preview_link(8080)

    async def run():
        async with connect(link, {"x-daytona-preview-token": link.token}) as socket:
            await socket.send("text frame")
            assert await asyncio.wait_for(socket.recv(), 10) == "text frame"
            payload = bytes(range(256)) * 300
            await socket.send(payload)
            assert await asyncio.wait_for(socket.recv(), 10) == payload
            pong = await socket.ping(b"are you there")
            latency = await asyncio.wait_for(pong, 10)
            assert latency >= 0
            await socket.send("close:4001")
            with pytest.raises(Exception):
                await asyncio.wait_for(socket.recv(), 10)
            assert socket.close_code == 4001
            assert socket.close_reason == "closed by the app"

    asyncio.run(run())


def test_websocket_long_lived(app):
    link = app.get_preview_link(8080)

    async def run():
        async with connect(link, {"x-daytona-preview-token": link.token}) as socket:
            for index in range(8):
                await asyncio.sleep(2.5)
                await socket.send(f"message {index}")
                assert await asyncio.wait_for(socket.recv(), 10) == f"message {index}"
            await socket.close(code=1000)
            assert socket.close_code == 1000

    asyncio.run(run())


def test_websocket_to_private_sandbox(app):
    """B26: a token in a header, the query or a cookie gives 101; none gives 401, never a redirect."""
    import websockets

    link = app.get_preview_link(8080)

    async def echo(**kwargs):
        async with connect(link, **kwargs) as socket:
            await socket.send("hi")
            return await asyncio.wait_for(socket.recv(), 10)

    async def run():
        assert await echo(headers={"x-daytona-preview-token": link.token}) == "hi"
        assert await echo(query=f"?DAYTONA_SANDBOX_AUTH_KEY={link.token}") == "hi"
        assert await echo(headers={"Cookie": f"daytona-preview-{app.id}={link.token}"}) == "hi"
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await echo()
        assert refused.value.response.status_code == 401
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            await echo(headers={"x-daytona-preview-token": "wrong"})
        assert refused.value.response.status_code == 401

    asyncio.run(run())


def test_toolbox_accepts_preview_token(app, server):
    """The TypeScript SDK's serverless path sends the preview token instead of an API key."""
    token = app.get_preview_link(1).token
    base = f"{server.url}/toolbox/{app.id}"
    status, body = server.request("GET", f"{base}/work-dir", headers={"x-daytona-preview-token": token}, key=None)
    assert status == 200, body
    assert body["dir"]
    status, body = server.request("GET", f"{base}/work-dir?DAYTONA_SANDBOX_AUTH_KEY={token}", key=None)
    assert status == 200, body
    status, body = server.request("GET", f"{base}/work-dir?DAYTONA_SANDBOX_AUTH_KEY=wrong", key=None)
    assert status == 401


def start_app(sandbox, host, port):
    """Starts the preview app in `sandbox` on `host`:`port`."""
    with open(APP, "rb") as source:
        sandbox.fs.upload_file(source.read(), "/tmp/preview_app.py")
    sandbox.process.create_session("app")
    sandbox.process.execute_session_command(
        "app", SessionExecuteRequest(command=f"python3 /tmp/preview_app.py {host} {port}", run_async=True)
    )


def test_path_style_server_setting():
    """`--preview-url-style path` makes the API hand out path-style URLs, which work as given."""
    from conftest import client_for
    from daytona_server import Server

    server = Server(["--preview-url-style", "path", "--warm-pool-size", "0"])
    try:
        server.start()
        daytona = client_for(server)
        sandbox = daytona.create()
        start_app(sandbox, "::1", 8080)
        link = sandbox.get_preview_link(8080)
        assert link.url == f"http://127.0.0.1:{server.preview_port}/preview/{sandbox.id}/8080"
        token = ["-H", f"x-daytona-preview-token: {link.token}"]
        wait_until(lambda: curl(*token, f"{link.url}/hello")[0] == 200, message="the app")
        status, _, body = curl(*token, f"{link.url}/headers?q=1")
        assert status == 200
        assert json.loads(body)["target"] == "/headers?q=1"
        signed = sandbox.create_signed_preview_url(8080, expires_in_seconds=60)
        assert signed.url == f"http://127.0.0.1:{server.preview_port}/preview/{signed.token}/8080"
        assert curl(f"{signed.url}/hello")[0] == 200
        daytona.delete(sandbox)
    finally:
        server.stop()
        server.remove_data()


def test_signed_url_expiry_reaches_a_busy_proxy(app):
    """The proxy reuses an authorization for up to one second (see the README), so a signed
    URL in constant use stops working at most a second after it expires."""
    signed = app.create_signed_preview_url(8080, expires_in_seconds=2)
    created = time.time()
    assert curl(f"{signed.url}/hello")[0] == 200
    while curl(f"{signed.url}/hello")[0] == 200:
        # Expiry counts in whole seconds: at most 3 s, then up to 1 s of reuse, plus slack.
        assert time.time() - created < 6, "the expired signed URL still opens the preview"
        time.sleep(0.05)
    assert time.time() - created >= 1


def test_private_again_at_once_for_a_busy_proxy(app):
    url = app.get_preview_link(8080).url
    app.set_public(True)
    try:
        for _ in range(5):
            assert curl(f"{url}/hello")[0] == 200
    finally:
        app.set_public(False)
    assert curl(f"{url}/hello")[0] == 401


def test_preview_over_tls_with_http2():
    """`--preview-tls` serves the preview listener over TLS, where curl negotiates HTTP/2 by
    ALPN. The certificate of the local CA covers localhost, not `*.localhost`, so the test
    uses the path style."""
    from conftest import client_for
    from daytona_server import Server

    server = Server(["--preview-tls", "--preview-url-style", "path", "--warm-pool-size", "0"])
    try:
        server.start()
        tls_dir = server.tls_dir or os.path.join(server.data_dir, "tls")
        daytona = client_for(server)
        sandbox = daytona.create()
        start_app(sandbox, "0.0.0.0", 8080)
        link = sandbox.get_preview_link(8080)
        assert link.url == f"https://127.0.0.1:{server.preview_port}/preview/{sandbox.id}/8080"
        url = f"https://localhost:{server.preview_port}/preview/{sandbox.id}/8080"
        tls = ["--cacert", os.path.join(tls_dir, "ca.crt"), "-H", f"x-daytona-preview-token: {link.token}"]
        wait_until(lambda: curl(*tls, f"{url}/hello")[0] == 200, message="the app over TLS")

        status, _, body = curl(*tls, "--http2", "-w", "%{http_version}", f"{url}/hello")
        assert status == 200
        assert body.decode().splitlines() == ["hello from port 8080", "2"]
        status, _, body = curl(*tls, "--http1.1", "-w", "%{http_version}", f"{link.url}/hello")
        assert status == 200
        assert body.decode().splitlines() == ["hello from port 8080", "1.1"]
        # Without the token, the proxy still answers 401 over TLS.
        assert curl("--cacert", os.path.join(tls_dir, "ca.crt"), "--http2", f"{url}/hello")[0] == 401
        daytona.delete(sandbox)
    finally:
        server.stop()
        server.remove_data()
