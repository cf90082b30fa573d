"""The toolbox proxy under concurrent load: every request gets the daemon's response, never a
502 from a dropped exchange."""

import concurrent.futures
import os


def test_concurrent_toolbox_requests_all_answer(sandbox):
    payload = os.urandom(64 * 1024)

    def one(index):
        kind = index % 4
        if kind == 0:
            response = sandbox.process.exec(f"echo {index}")
            assert response.exit_code == 0
            assert response.result.strip() == str(index)
        elif kind == 1:
            path = f"/tmp/load-{index}.bin"
            sandbox.fs.upload_file(payload, path)
            assert sandbox.fs.download_file(path) == payload
        elif kind == 2:
            assert sandbox.fs.get_file_info("/home/daytona").is_dir
        else:
            # A command that fails and a missing file: error responses must come through too.
            assert sandbox.process.exec("exit 3").exit_code == 3
            try:
                sandbox.fs.download_file(f"/tmp/missing-{index}")
            except Exception as error:  # noqa: BLE001 - the SDK's not-found error
                assert "502" not in str(error), error
                assert "Bad Gateway" not in str(error), error
            else:
                raise AssertionError("download of a missing file succeeded")
        return index

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
        done = sorted(pool.map(one, range(600)))
    assert done == list(range(600))
