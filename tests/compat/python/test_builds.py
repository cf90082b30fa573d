"""Image builds through the official Python SDK: `Image` definitions and Dockerfiles become
snapshots, with their build logs streamed to the SDK's callback.

Builds start from the default snapshot, which the server has in its image store; there is no
registry on the network, so a base image that is not in the store fails the build. Definitions
with local files need object storage for their build context; those tests skip while the
server reports it unavailable.
"""

import uuid

import pytest
from daytona import (
    CreateSandboxFromSnapshotParams,
    CreateSnapshotParams,
    DaytonaError,
    Image,
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
    # NOTE: `pip_install` runs `python -m pip`; the default snapshot has `python3` but no
    # `python` command, so this step fails there until the image provides one.
    wheel_dir = tmp_path / "wheels"
    wheel_dir.mkdir()
    name = _name("wheel")
    image = Image.base(DEFAULT_IMAGE).add_local_dir(wheel_dir, "/wheels").pip_install(
        "nothing", find_links=["/wheels"]
    )
    with pytest.raises(DaytonaError):
        daytona.snapshot.create(CreateSnapshotParams(name=name, image=image))
