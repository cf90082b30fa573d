"""Large inputs reach the sandbox or are refused with a clear 4xx, and break nothing."""

from daytona import CreateSandboxFromSnapshotParams


def test_large_env_survives_stop_and_start(daytona):
    # Over the kernel's 128 KiB cap on one environment string.
    value = "v" * 200_000
    for user in ("daytona", "root"):  # from the warm pool, and started in the request
        sandbox = daytona.create(CreateSandboxFromSnapshotParams(os_user=user, env_vars={"BIG": value}))
        try:
            assert sandbox.process.exec('printf %s "$BIG" | wc -c').result.strip() == "200000"
            sandbox.stop()
            sandbox.start()
            assert sandbox.process.exec('printf %s "$BIG" | wc -c').result.strip() == "200000"
        finally:
            daytona.delete(sandbox)
