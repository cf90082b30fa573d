"""Cost of disk limits on sandbox creation: server-side create time without the warm pool,
with disk images (the default) and with DAYTONA_DISK_LIMITS=off, side by side.

Run as root with DAYTONA_BIN, DAYTONA_DAEMON_BIN and DAYTONA_IMAGE_CACHE set, as for the
Python suite: python bench/disk_limits.py --iterations 30
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))

from daytona_server import Server  # noqa: E402


def server_side_ms(server) -> float:
    import http.client

    connection = http.client.HTTPConnection("127.0.0.1", server.port)
    headers = {"Authorization": f"Bearer {server.api_key}", "Content-Type": "application/json"}
    connection.request("POST", "/api/sandbox", body="{}", headers=headers)
    response = connection.getresponse()
    body = response.read()
    assert response.status == 200, body
    timing = dict(
        part.strip().split(";dur=") for part in response.getheader("server-timing").split(",")
    )
    import json

    sandbox_id = json.loads(body)["id"]
    connection.request("DELETE", f"/api/sandbox/{sandbox_id}", headers=headers)
    connection.getresponse().read()
    connection.close()
    return float(timing["total"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=30)
    args = parser.parse_args()
    results = {}
    for label, value in (("disk limit (ext4 image)", None), ("no disk limit", "off")):
        if value is None:
            os.environ.pop("DAYTONA_DISK_LIMITS", None)
        else:
            os.environ["DAYTONA_DISK_LIMITS"] = value
        server = Server(["--warm-pool-size", "0"])
        try:
            server.start()
            server_side_ms(server)  # warm-up, which also makes the disk template
            results[label] = sorted(server_side_ms(server) for _ in range(args.iterations))
        finally:
            server.stop()
            server.remove_data()
    for label, samples in results.items():
        p95 = samples[min(len(samples) - 1, int(len(samples) * 0.95))]
        print(f"{label:<28} median {statistics.median(samples):7.2f} ms  p95 {p95:7.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
