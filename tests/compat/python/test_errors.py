"""Error shapes and status codes, over raw HTTP."""

import pytest

ERROR_FIELDS = {"statusCode", "message", "code", "source", "timestamp", "path", "method"}


def assert_error(status, body, expected_status, expected_code=None):
    assert status == expected_status, body
    assert isinstance(body, dict), body
    assert ERROR_FIELDS <= set(body), body
    assert body["statusCode"] == expected_status
    if expected_code:
        assert body["code"] == expected_code
    assert body["message"]


def test_missing_key_is_401(server):
    status, body = server.request("GET", "/sandbox", key=None)
    assert_error(status, body, 401, "UNAUTHORIZED")
    assert body["source"] == "DAYTONA_API"


def test_wrong_key_is_401(server):
    status, body = server.request("GET", "/sandbox", key="dtn_wrong")
    assert_error(status, body, 401, "UNAUTHORIZED")


def test_unknown_sandbox_is_404(server):
    status, body = server.request("GET", "/sandbox/00000000-0000-0000-0000-000000000000")
    assert_error(status, body, 404, "NOT_FOUND")
    assert body["path"] == "/api/sandbox/00000000-0000-0000-0000-000000000000"
    assert body["method"] == "GET"


def test_bad_json_is_400(server):
    status, body = server.request("POST", "/sandbox", body=b"{not json")
    assert_error(status, body, 400, "INVALID_REQUEST_BODY")


def test_wrong_field_type_is_400(server):
    status, body = server.request("POST", "/sandbox", body={"cpu": "two"})
    assert_error(status, body, 400, "INVALID_REQUEST_BODY")


def test_out_of_range_resources_are_400(server):
    status, body = server.request("POST", "/sandbox", body={"cpu": 64})
    assert_error(status, body, 400)
    status, body = server.request("GET", "/sandbox?limit=1000")
    assert all(item["cpu"] != 64 for item in body["items"])


def test_unknown_fields_are_ignored(server):
    status, body = server.request("POST", "/sandbox", body={"someFutureField": {"x": 1}})
    assert status == 200, body
    server.request("DELETE", f"/sandbox/{body['id']}")


def test_duplicate_name_is_409(server):
    status, first = server.request("POST", "/sandbox", body={"name": "dup-name-test"})
    assert status == 200, first
    try:
        status, body = server.request("POST", "/sandbox", body={"name": "dup-name-test"})
        assert_error(status, body, 409, "CONFLICT")
    finally:
        server.request("DELETE", f"/sandbox/{first['id']}")


def test_unknown_snapshot_is_404(server):
    status, body = server.request("POST", "/sandbox", body={"snapshot": "no-such-snapshot"})
    assert_error(status, body, 404)


def test_unknown_route_is_404(server):
    status, body = server.request("GET", "/no-such-route")
    assert_error(status, body, 404, "NOT_FOUND")


def test_toolbox_of_unknown_sandbox_is_404(server):
    status, body = server.request("GET", f"{server.url}/toolbox/00000000-0000-0000-0000-000000000000/files?path=/")
    assert_error(status, body, 404)


def test_toolbox_bad_json_is_400(server, sandbox):
    status, body = server.request("POST", f"{server.url}/toolbox/{sandbox.id}/process/execute", body=b"{broken")
    assert_error(status, body, 400)
    assert body["source"] == "DAYTONA_DAEMON"


def test_toolbox_needs_key(server, sandbox):
    status, body = server.request("GET", f"{server.url}/toolbox/{sandbox.id}/work-dir", key=None)
    assert_error(status, body, 401)


def test_snapshots_list_default(server):
    status, body = server.request("GET", "/snapshots")
    assert status == 200
    names = [item["name"] for item in body["items"]]
    assert "daytona-default" in names
    assert isinstance(body["total"], int) and isinstance(body["totalPages"], int)


def test_health_without_key(server):
    status, body = server.request("GET", "/health", key=None)
    assert status == 200


@pytest.mark.parametrize("path", ["/sandbox/x/start", "/sandbox/x/stop"])
def test_lifecycle_of_unknown_is_404(server, path):
    status, body = server.request("POST", path)
    assert_error(status, body, 404)


def test_user_missing_from_the_image_is_400_and_leaves_nothing(server):
    status, body = server.request("POST", "/sandbox", body={"name": "ghost-user", "user": "ghost"})
    assert_error(status, body, 400, "BAD_REQUEST")
    assert "ghost" in body["message"]
    status, body = server.request("GET", "/sandbox/ghost-user")
    assert_error(status, body, 404, "NOT_FOUND")


def test_toolbox_answers_by_name_and_by_encoded_id(server):
    status, body = server.request("POST", "/sandbox", body={"name": "toolbox-by-name"})
    assert status == 200, body
    try:
        base = server.api_url.removesuffix("/api") + "/toolbox"
        encoded_id = "".join(f"%{ord(c):02X}" if c == "-" else c for c in body["id"])
        for segment in ("toolbox-by-name", body["id"], encoded_id):
            status, info = server.request("GET", f"{base}/{segment}/files/info?path=%2Fhome%2Fdaytona")
            assert status == 200, (segment, info)
            assert info["isDir"] is True
    finally:
        server.request("DELETE", f"/sandbox/{body['id']}")
