"""What a test on the host can see of a sandbox: its PID 1 and its cgroup files."""

import json
import os


def sandbox_pid1(server, sandbox_id: str) -> int:
    """Host pid of a running sandbox's PID 1, from the runner's record."""
    with open(os.path.join(server.data_dir, "sandboxes", sandbox_id, "sandbox.json")) as record:
        return json.load(record)["process"]["pid"]


def sandbox_cgroup_file(sandbox_id: str, controller: str, name: str) -> str:
    """Host path of a control file of the sandbox's cgroup. The server runs in this process's
    cgroup and puts sandboxes below it."""
    path = "/"
    with open("/proc/self/cgroup") as own:
        for line in own:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            if controller in controllers.split(","):
                return f"/sys/fs/cgroup/{controller}{path.rstrip('/')}/daytona-sandboxes/{sandbox_id}/{name}"
    return f"/sys/fs/cgroup{path.rstrip('/')}/daytona-sandboxes/{sandbox_id}/{name}"
