"""Large inputs reach the sandbox or are refused with a clear 4xx, and break nothing."""

import pytest
from daytona import CreateSandboxFromSnapshotParams, DaytonaBadRequestError


def test_large_env_survives_stop_and_start(daytona):
    # Together far over the kernel's 128 KiB cap on one environment string, which is how the
    # configuration once travelled into the sandbox.
    env = {f"BIG{index}": "v" * 100_000 for index in range(6)}
    for user in ("daytona", "root"):  # from the warm pool, and started in the request
        sandbox = daytona.create(CreateSandboxFromSnapshotParams(os_user=user, env_vars=env))
        try:
            assert sandbox.process.exec('printf %s "$BIG5" | wc -c').result.strip() == "100000"
            sandbox.stop()
            sandbox.start()
            assert sandbox.process.exec('printf %s "$BIG0" | wc -c').result.strip() == "100000"
        finally:
            daytona.delete(sandbox)


def test_env_entry_over_kernel_limit_is_400(daytona):
    with pytest.raises(DaytonaBadRequestError, match="BIG"):
        daytona.create(CreateSandboxFromSnapshotParams(env_vars={"BIG": "v" * 200_000}))
