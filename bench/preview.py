"""Benchmark the preview proxy against the same app reached directly, side by side in one run.

An app (tests/support/preview_app.py) listens on 0.0.0.0:8080 inside a sandbox. One client
program makes the same requests twice:

  (a) through the preview proxy: to the proxy's listener on loopback, with the preview host in
      `Host` and the sandbox's preview token in `x-daytona-preview-token`;
  (b) directly: the same client, started with `nsenter --net` in the sandbox's network
      namespace, to 127.0.0.1:8080.

Each side measures the latency of sequential `GET /hello` requests on one keep-alive
connection (median and p99) and the throughput of several connections at once for a fixed
time, and the run prints both with the ratios proxy / direct.

Run as root, with DAYTONA_BIN, DAYTONA_DAEMON_BIN and DAYTONA_IMAGE_CACHE set (scripts/bench
sets them): ./scripts/bench preview
"""

import argparse
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "support"))

APP = os.path.join(os.path.dirname(__file__), "..", "tests", "support", "preview_app.py")
APP_PORT = 8080


def percentile(samples, fraction):
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def get(connection, host_header, token):
    headers = {"Host": host_header}
    if token:
        headers["x-daytona-preview-token"] = token
    connection.request("GET", "/hello", headers=headers)
    response = connection.getresponse()
    body = response.read()
    if response.status != 200:
        raise RuntimeError(f"GET /hello returned {response.status}: {body[:200]!r}")


def client(args):
    """Runs the measurements of one side and prints them as JSON."""
    connection = http.client.HTTPConnection(args.host, args.port, timeout=30)
    for _ in range(50):
        get(connection, args.host_header, args.token)
    latencies = []
    for _ in range(args.requests):
        started = time.perf_counter()
        get(connection, args.host_header, args.token)
        latencies.append(time.perf_counter() - started)
    connection.close()

    counts = [0] * args.concurrency
    deadline = time.perf_counter() + args.seconds

    def worker(index):
        own = http.client.HTTPConnection(args.host, args.port, timeout=30)
        while time.perf_counter() < deadline:
            get(own, args.host_header, args.token)
            counts[index] += 1
        own.close()

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(args.concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    print(json.dumps({
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "requests_per_second": sum(counts) / elapsed,
    }))


def run_client(prefix, host, port, host_header, token, args):
    argv = [
        *prefix, sys.executable, __file__, "--client",
        "--host", host, "--port", str(port), "--host-header", host_header,
        "--requests", str(args.requests), "--concurrency", str(args.concurrency),
        "--seconds", str(args.seconds),
    ]
    if token:
        argv += ["--token", token]
    completed = subprocess.run(argv, capture_output=True, check=False, timeout=600)
    if completed.returncode != 0:
        raise RuntimeError(f"the client failed: {completed.stderr.decode()[-2000:]}")
    return json.loads(completed.stdout)


def sandbox_pid(server, sandbox_id):
    """Host pid of the sandbox's PID 1, from the runner's record."""
    with open(os.path.join(server.data_dir, "sandboxes", sandbox_id, "sandbox.json")) as record:
        return json.load(record)["process"]["pid"]


def wait_for_app(host, port, host_header, token):
    deadline = time.monotonic() + 30
    while True:
        try:
            get(http.client.HTTPConnection(host, port, timeout=5), host_header, token)
            return
        except (OSError, RuntimeError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def benchmark(args):
    if os.geteuid() != 0:
        print("SKIPPED: the preview benchmark needs root (the server and nsenter)")
        return 0
    if shutil.which("nsenter") is None:
        print("SKIPPED: nsenter (util-linux) is not installed")
        return 0
    from daytona import Daytona, DaytonaConfig, SessionExecuteRequest
    from daytona_server import Server

    server = Server(["--warm-pool-size", "0"])
    try:
        server.start()
        daytona = Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))
        sandbox = daytona.create()
        with open(APP, "rb") as source:
            sandbox.fs.upload_file(source.read(), "/tmp/preview_app.py")
        sandbox.process.create_session("app")
        sandbox.process.execute_session_command(
            "app", SessionExecuteRequest(command=f"python3 /tmp/preview_app.py 0.0.0.0 {APP_PORT}", run_async=True)
        )
        link = sandbox.get_preview_link(APP_PORT)
        preview_host = urllib.parse.urlsplit(link.url).netloc
        wait_for_app("127.0.0.1", server.preview_port, preview_host, link.token)

        proxied = run_client([], "127.0.0.1", server.preview_port, preview_host, link.token, args)
        namespace = f"--net=/proc/{sandbox_pid(server, sandbox.id)}/ns/net"
        direct = run_client(
            ["nsenter", namespace], "127.0.0.1", APP_PORT, f"127.0.0.1:{APP_PORT}", None, args
        )
        daytona.delete(sandbox)
    finally:
        server.stop()
        server.remove_data()

    print(f"{args.requests} sequential requests, then {args.concurrency} connections for {args.seconds} s")
    print(f"{'measurement':<24}{'direct':>12}{'proxy':>12}{'proxy/direct':>14}")
    for key, label in (("p50_ms", "latency p50 (ms)"), ("p99_ms", "latency p99 (ms)"),
                       ("requests_per_second", "throughput (req/s)")):
        ratio = proxied[key] / direct[key]
        print(f"{label:<24}{direct[key]:>12.3f}{proxied[key]:>12.3f}{ratio:>14.2f}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000, help="sequential requests per side")
    parser.add_argument("--concurrency", type=int, default=8, help="connections of the throughput run")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of the throughput run")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--host", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--host-header", help=argparse.SUPPRESS)
    parser.add_argument("--token", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        client(args)
        return 0
    return benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
