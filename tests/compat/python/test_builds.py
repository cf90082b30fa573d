"""Image builds through the official Python SDK: `Image` definitions and Dockerfiles become
snapshots, with their build logs streamed to the SDK's callback.

Builds start from the default snapshot, which the server has in its image store; there is no
registry on the network, so a base image that is not in the store fails the build. Definitions
with local files need object storage for their build context; those tests skip while the
server reports it unavailable.
"""

import os
import signal
import time
import uuid

import pytest
from daytona import (
    CreateSandboxFromImageParams,
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    DaytonaError,
    Image,
    Resources,
)

DEFAULT_IMAGE = "daytona-default"


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _object_storage_available(server) -> bool:
    status, _ = server.request("GET", "/object-storage/push-access")
    return status == 200


@pytest.fixture(scope="module")
def built(daytona):
    """A snapshot built from an Image definition, with the log lines the SDK received."""
    lines = []
    name = _name("built")
    image = (
        Image.base(DEFAULT_IMAGE)
        .run_commands("echo built-by-run > /opt/marker", "mkdir -p /srv/app")
        .env({"BUILD_GREETING": "hello world"})
        .workdir("/srv/app")
        # Unique per run: the image store is shared across runs, and the same definition
        # would reuse the image of an earlier run without a build.
        .env({"BUILD_RUN": name})
    )
    snapshot = daytona.snapshot.create(CreateSnapshotParams(name=name, image=image), on_logs=lines.append)
    yield snapshot, lines
    try:
        daytona.snapshot.delete(daytona.snapshot.get(name))
    except Exception:  # noqa: BLE001 - a test may have deleted it already
        pass


def test_image_definition_builds_active_snapshot(built):
    snapshot, lines = built
    assert snapshot.state == "active"
    text = "\n".join(lines)
    assert "RUN echo built-by-run > /opt/marker" in text
    assert "The build has no network access" in text
    assert "Successfully built image" in text


def test_sandbox_from_built_snapshot_sees_files_and_env(daytona, built):
    snapshot, _ = built
    sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=snapshot.name))
    try:
        assert sandbox.process.exec("cat /opt/marker").result.strip() == "built-by-run"
        assert sandbox.process.exec("echo $BUILD_GREETING").result.strip() == "hello world"
        assert sandbox.process.exec("pwd").result.strip() == "/srv/app"
    finally:
        daytona.delete(sandbox)


def test_rebuild_reuses_cached_steps(daytona, built):
    snapshot, _ = built
    lines = []
    name = _name("rebuilt")
    image = (
        Image.base(DEFAULT_IMAGE)
        .run_commands("echo built-by-run > /opt/marker", "mkdir -p /srv/app")
        .env({"BUILD_GREETING": "hello world"})
        .workdir("/srv/app")
        .env({"BUILD_RUN": name})
        .run_commands("echo second > /opt/second")
    )
    second = daytona.snapshot.create(CreateSnapshotParams(name=name, image=image), on_logs=lines.append)
    try:
        assert second.state == "active"
        text = "\n".join(lines)
        assert text.count("CACHED") == 2, text
    finally:
        daytona.snapshot.delete(second)


def test_failing_step_is_build_failed_with_reason(daytona):
    name = _name("failing")
    image = Image.base(DEFAULT_IMAGE).run_commands("echo about to fail; exit 7")
    lines = []
    with pytest.raises(DaytonaError, match="exit code 7"):
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=image), on_logs=lines.append)
    assert any("about to fail" in line for line in lines), lines
    snapshot = daytona.snapshot.get(name)
    assert snapshot.state == "build_failed"
    daytona.snapshot.delete(snapshot)


def test_build_has_no_network(daytona):
    name = _name("offline")
    image = Image.base(DEFAULT_IMAGE).run_commands(
        "python3 -c 'import socket; socket.create_connection((\"1.1.1.1\", 53), timeout=2)'"
    )
    with pytest.raises(DaytonaError, match="failed with exit code"):
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=image))
    daytona.snapshot.delete(daytona.snapshot.get(name))


def test_debian_slim_fails_naming_the_base(daytona):
    name = _name("slim")
    with pytest.raises(DaytonaError, match=r"python:3\.12[.0-9]*-slim-bookworm"):
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=Image.debian_slim("3.12")))
    snapshot = daytona.snapshot.get(name)
    assert snapshot.state == "build_failed"
    assert "daytona snapshot import" in snapshot.error_reason
    daytona.snapshot.delete(snapshot)


def test_dockerfile_with_entrypoint_cmd_user(daytona, tmp_path):
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        f"""# a comment
FROM {DEFAULT_IMAGE}
RUN mkdir -p /data && \\
    chown daytona:daytona /data
USER daytona
RUN id -un > /data/whoami
ENV MODE=dockerfile
ENTRYPOINT ["/bin/sleep"]
CMD ["infinity"]
"""
    )
    name = _name("dockerfile")
    snapshot = daytona.snapshot.create(CreateSnapshotParams(name=name, image=Image.from_dockerfile(dockerfile)))
    try:
        assert snapshot.state == "active"
        assert snapshot.entrypoint == ["/bin/sleep"]
        sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
        try:
            assert sandbox.process.exec("cat /data/whoami").result.strip() == "daytona"
            assert sandbox.process.exec("echo $MODE").result.strip() == "dockerfile"
        finally:
            daytona.delete(sandbox)
    finally:
        daytona.snapshot.delete(daytona.snapshot.get(name))


def test_unsupported_instruction_names_the_line(daytona):
    name = _name("unsupported")
    image = Image.base(DEFAULT_IMAGE).dockerfile_commands(["EXPOSE 8080"])
    with pytest.raises(DaytonaError, match="line 2: instruction EXPOSE is not supported"):
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=image))
    daytona.snapshot.delete(daytona.snapshot.get(name))


def test_delete_while_building_stops_the_build(daytona, server):
    import time

    name = _name("deleted")
    image = Image.base(DEFAULT_IMAGE).run_commands("sleep 300")
    status, created = server.request(
        "POST",
        "/snapshots",
        {"name": name, "buildInfo": {"dockerfileContent": image.dockerfile()}},
    )
    assert status == 200, created
    deadline = time.monotonic() + 30
    while daytona.snapshot.get(name).state != "building":
        assert time.monotonic() < deadline, "the build did not start"
        time.sleep(0.2)
    status, _ = server.request("DELETE", f"/snapshots/{created['id']}")
    assert status == 200
    with pytest.raises(DaytonaError):
        daytona.snapshot.get(name)


def test_local_file_needs_object_storage(daytona, server, tmp_path):
    if not _object_storage_available(server):
        pytest.skip("the server reports object storage unavailable; local build contexts need it")
    local = tmp_path / "hello.txt"
    local.write_text("from the context\n")
    name = _name("context")
    image = Image.base(DEFAULT_IMAGE).add_local_file(local, "/opt/hello.txt")
    snapshot = daytona.snapshot.create(CreateSnapshotParams(name=name, image=image))
    try:
        sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
        try:
            assert sandbox.process.exec("cat /opt/hello.txt").result == "from the context\n"
        finally:
            daytona.delete(sandbox)
    finally:
        daytona.snapshot.delete(snapshot)


def test_pip_install_of_wheel_needs_object_storage(daytona, server, tmp_path):
    if not _object_storage_available(server):
        pytest.skip("the server reports object storage unavailable; a wheel in the build context needs it")
    # A wheel made by hand: a zip with the module, METADATA, WHEEL and RECORD, which is all
    # that pip needs to install it offline from --find-links.
    import zipfile

    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    wheel = wheel_dir / "dtnhello-1.0-py3-none-any.whl"
    dist_info = "dtnhello-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("dtnhello.py", "GREETING = 'hello from the wheel'\n")
        archive.writestr(f"{dist_info}/METADATA", "Metadata-Version: 2.1\nName: dtnhello\nVersion: 1.0\n")
        archive.writestr(
            f"{dist_info}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        archive.writestr(f"{dist_info}/RECORD", f"dtnhello.py,,\n{dist_info}/METADATA,,\n{dist_info}/WHEEL,,\n{dist_info}/RECORD,,\n")
    name = _name("wheel")
    image = (
        Image.base(DEFAULT_IMAGE)
        .add_local_dir(wheel_dir, "/wheels")
        .pip_install("dtnhello", find_links=["/wheels"], extra_options="--no-index --break-system-packages")
    )
    snapshot = daytona.snapshot.create(CreateSnapshotParams(name=name, image=image))
    try:
        sandbox = daytona.create(CreateSandboxFromSnapshotParams(snapshot=name))
        try:
            result = sandbox.process.exec("python3 -c 'import dtnhello; print(dtnhello.GREETING)'")
            assert result.result.strip() == "hello from the wheel", result.result
        finally:
            daytona.delete(sandbox)
    finally:
        daytona.snapshot.delete(snapshot)


# Sandboxes created from an image definition: `pending_build` -> `building_snapshot` ->
# `starting` -> `started`, with the build log streamed to `on_snapshot_create_logs`.


def _sandbox_image(marker: str) -> Image:
    # The marker makes the definition unique per run, since the image store is shared.
    return (
        Image.base(DEFAULT_IMAGE)
        .run_commands("echo built > /built.txt")
        .env({"X": "1"})
        .env({"BUILD_RUN": marker})
    )


def test_sandbox_from_image_is_started_with_logs(daytona):
    lines = []
    params = CreateSandboxFromImageParams(
        image=_sandbox_image(_name("sandbox-image")),
        resources=Resources(cpu=2, memory=2, disk=4),
    )
    sandbox = daytona.create(params, timeout=300, on_snapshot_create_logs=lines.append)
    try:
        assert sandbox.state == "started"
        assert (sandbox.cpu, sandbox.memory, sandbox.disk) == (2, 2, 4)
        assert sandbox.process.exec("cat /built.txt").result.strip() == "built"
        assert sandbox.process.exec("echo $X").result.strip() == "1"
        text = "\n".join(lines)
        assert "RUN echo built > /built.txt" in text, text
        assert "starting the sandbox" in text, text
    finally:
        daytona.delete(sandbox)


def test_sandbox_from_image_reuses_built_image(daytona):
    image = _sandbox_image(_name("sandbox-reuse"))
    first = daytona.create(CreateSandboxFromImageParams(image=image), timeout=300)
    daytona.delete(first)
    lines = []
    second = daytona.create(CreateSandboxFromImageParams(image=image), timeout=300, on_snapshot_create_logs=lines.append)
    try:
        text = "\n".join(lines)
        assert "reusing it" in text, text
        assert "RUN " not in text, text
        assert second.process.exec("cat /built.txt").result.strip() == "built"
    finally:
        daytona.delete(second)


def test_sandbox_from_failing_image_is_build_failed(daytona):
    name = _name("sandbox-failing")
    image = Image.base(DEFAULT_IMAGE).run_commands(f"echo about to fail {name}; exit 7")
    lines = []
    with pytest.raises(DaytonaError, match="exit code 7"):
        daytona.create(
            CreateSandboxFromImageParams(name=name, image=image), timeout=300, on_snapshot_create_logs=lines.append
        )
    assert any("about to fail" in line for line in lines), lines
    sandbox = daytona.get(name)
    assert sandbox.state == "build_failed"
    assert "exit code 7" in sandbox.error_reason
    with pytest.raises(DaytonaError, match="build_failed"):
        sandbox.start()
    daytona.delete(sandbox)


def test_sandbox_with_snapshot_and_image_is_400(server):
    status, body = server.request(
        "POST",
        "/sandbox",
        {"snapshot": DEFAULT_IMAGE, "buildInfo": {"dockerfileContent": f"FROM {DEFAULT_IMAGE}\n"}},
    )
    assert status == 400, body
    assert "buildInfo" in body["message"]


def _processes_with_argument(argument: str) -> list[int]:
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                if argument.encode() in cmdline.read().split(b"\0"):
                    found.append(int(pid))
        except OSError:
            pass
    return found


def _wait_for_sandbox_state(server, sandbox_id: str, wanted: str, seconds: float = 60) -> dict:
    deadline = time.monotonic() + seconds
    while True:
        status, body = server.request("GET", f"/sandbox/{sandbox_id}")
        assert status == 200, f"{body}\n{server.log_tail(80)}"
        if body["state"] == wanted:
            return body
        assert time.monotonic() < deadline, f"sandbox is {body['state']}, not {wanted}"
        time.sleep(0.2)


def test_delete_of_building_sandbox_leaves_nothing(server):
    # A sleep argument that no other process has, to find the build step's process.
    seconds = f"299.{uuid.uuid4().int % 10**6:06d}"
    dockerfile = Image.base(DEFAULT_IMAGE).run_commands(f"sleep {seconds}").dockerfile()
    status, created = server.request("POST", "/sandbox", {"buildInfo": {"dockerfileContent": dockerfile}})
    assert status == 200, created
    assert created["state"] == "pending_build"
    sandbox_id = created["id"]

    _wait_for_sandbox_state(server, sandbox_id, "building_snapshot")
    deadline = time.monotonic() + 60
    while not _processes_with_argument(seconds):
        assert time.monotonic() < deadline, "the RUN step did not start"
        time.sleep(0.2)
    status, url = server.request("GET", f"/sandbox/{sandbox_id}/build-logs-url")
    assert status == 200, url
    assert url["url"].endswith(f"/sandbox/{sandbox_id}/build-logs")

    status, _ = server.request("DELETE", f"/sandbox/{sandbox_id}")
    assert status == 200
    status, _ = server.request("GET", f"/sandbox/{sandbox_id}")
    assert status == 404
    deadline = time.monotonic() + 30
    while _processes_with_argument(seconds):
        assert time.monotonic() < deadline, "the RUN step still runs after the delete"
        time.sleep(0.2)
    assert not os.path.exists(os.path.join(server.data_dir, "builds", sandbox_id))
    status, listed = server.request("GET", "/sandbox")
    assert sandbox_id not in [item["id"] for item in listed["items"]]


def test_restart_fails_interrupted_sandbox_build(own_server):
    seconds = f"298.{uuid.uuid4().int % 10**6:06d}"
    dockerfile = Image.base(DEFAULT_IMAGE).run_commands(f"sleep {seconds}").dockerfile()
    status, created = own_server.request("POST", "/sandbox", {"buildInfo": {"dockerfileContent": dockerfile}})
    assert status == 200, created
    sandbox_id = created["id"]
    _wait_for_sandbox_state(own_server, sandbox_id, "building_snapshot")

    # Server.stop() deletes every sandbox first, so the server is stopped by hand.
    own_server.process.send_signal(signal.SIGTERM)
    own_server.process.wait(timeout=30)
    own_server.process = None
    own_server.start()
    body = _wait_for_sandbox_state(own_server, sandbox_id, "build_failed", seconds=10)
    assert "restarted" in body["errorReason"]
    deadline = time.monotonic() + 30
    while _processes_with_argument(seconds):
        assert time.monotonic() < deadline, "the RUN step still runs after the restart"
        time.sleep(0.2)
    status, _ = own_server.request("DELETE", f"/sandbox/{sandbox_id}")
    assert status == 200
