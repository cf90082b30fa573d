"""Sandbox networking and egress policies, through the official SDK.

The test builds its own small internet: a network namespace with a web server on
198.51.100.10 and 198.51.100.20 (port 80), a name server of its own on 198.51.100.53 that
answers `allowed.test` and `denied.test`, and listeners on 169.254.169.254 and on a
"sandbox-looking" address, so that a connection that got through would be seen. The server
under test gets its uplink (a veth pair) into that namespace, which has no route further, so
no packet of a sandbox can leave it.
"""

import ipaddress
import os
import shutil
import subprocess
import sys
import time
import uuid

import pytest
from daytona import CreateSandboxFromSnapshotParams, DaytonaError

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "support"))
from daytona_server import Server  # noqa: E402

from conftest import client_for  # noqa: E402

WEB_ALLOWED = "198.51.100.10"
WEB_DENIED = "198.51.100.20"
WEB_OTHER = "203.0.113.10"
DNS_SERVER = "198.51.100.53"
METADATA = "169.254.169.254"
HUB_ADDRESS = "192.0.2.2/30"
GATEWAY = "192.0.2.1"
SANDBOX_SUBNET = ipaddress.ip_network("100.96.0.0/16")

DNS_SERVER_SCRIPT = r"""
import socket, struct, sys
ANSWERS = {"allowed.test": "198.51.100.10", "denied.test": "198.51.100.20"}
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((sys.argv[1], 53))
while True:
    query, client = sock.recvfrom(4096)
    labels, offset = [], 12
    while query[offset]:
        length = query[offset]
        labels.append(query[offset + 1:offset + 1 + length].decode().lower())
        offset += 1 + length
    question_end = offset + 5
    name = ".".join(labels)
    qtype = struct.unpack("!H", query[offset + 1:offset + 3])[0]
    header = bytearray(query[:12])
    header[2] = 0x84 | (query[2] & 0x01)
    address = ANSWERS.get(name)
    if address is None:
        header[3] = 0x83
        sock.sendto(bytes(header[:6]) + b"\0\0\0\0\0\0" + query[12:question_end], client)
        continue
    header[3] = 0x80
    answers = 1 if qtype == 1 else 0
    reply = bytes(header[:6]) + struct.pack("!HHH", answers, 0, 0) + query[12:question_end]
    if answers:
        reply += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
    sock.sendto(reply, client)
"""


def run(*command, check=True):
    return subprocess.run(command, check=check, capture_output=True, text=True)


def in_namespace(namespace, *command, check=True):
    return run("ip", "netns", "exec", namespace, *command, check=check)


def skip_reason():
    if os.geteuid() != 0:
        return "needs root: the test creates network namespaces"
    for tool in ("ip", "nft", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return None


class Internet:
    """The test's network namespace with its servers."""

    def __init__(self):
        self.name = f"dtn-net-{uuid.uuid4().hex[:8]}"
        self.path = f"/run/netns/{self.name}"
        self.processes = []

    def start(self):
        run("ip", "netns", "add", self.name)
        in_namespace(self.name, "ip", "link", "set", "lo", "up")
        for address in (WEB_ALLOWED, WEB_DENIED, WEB_OTHER, DNS_SERVER, METADATA):
            in_namespace(self.name, "ip", "address", "add", f"{address}/32", "dev", "lo")
        self.spawn("python3", "-m", "http.server", "80", "--bind", "0.0.0.0", "--directory", "/var/empty")
        self.spawn("python3", "-c", DNS_SERVER_SCRIPT, DNS_SERVER)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            probe = in_namespace(self.name, "python3", "-c",
                                 f"import socket; socket.create_connection(('{WEB_ALLOWED}', 80), 1)", check=False)
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError("the test's web server did not start")

    def spawn(self, *command):
        os.makedirs("/var/empty", exist_ok=True)
        self.processes.append(subprocess.Popen(["ip", "netns", "exec", self.name, *command],
                                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

    def stop(self):
        for process in self.processes:
            process.kill()
            process.wait()
        run("ip", "netns", "delete", self.name, check=False)

    def links(self):
        return in_namespace(self.name, "ip", "-o", "link", "show").stdout


@pytest.fixture(scope="module")
def internet():
    reason = skip_reason()
    if reason:
        print(f"SKIPPED: {reason}")
        pytest.skip(reason)
    world = Internet()
    try:
        world.start()
        yield world
    finally:
        world.stop()


def network_server(internet):
    return Server(extra_args=[
        "--network-uplink", "veth",
        "--network-uplink-netns", internet.path,
        "--network-uplink-address", HUB_ADDRESS,
        "--network-uplink-gateway", GATEWAY,
        "--dns-upstream", DNS_SERVER,
        "--sandbox-subnet", str(SANDBOX_SUBNET),
        "--warm-pool-size", "1",
    ])


@pytest.fixture(scope="module")
def net_server(internet):
    instance = network_server(internet)
    try:
        instance.start()
        yield instance
    finally:
        instance.stop()
        instance.remove_data()


@pytest.fixture(scope="module")
def client(net_server):
    return client_for(net_server)


def hub_path(server):
    return os.path.join(server.data_dir, "network", "hub")


def in_hub(server, *command, check=True):
    return run("nsenter", f"--net={hub_path(server)}", *command, check=check)


def connects(sandbox, address, port=80):
    """Whether a TCP connection from inside the sandbox to address:port succeeds."""
    code = f"import socket; socket.create_connection(('{address}', {port}), timeout=3)"
    return sandbox.process.exec(f"python3 -c \"{code}\"", timeout=30).exit_code == 0


def resolves(sandbox, name):
    code = f"import socket; print(socket.gethostbyname('{name}'))"
    response = sandbox.process.exec(f"python3 -c \"{code}\"", timeout=30)
    return response.result.strip() if response.exit_code == 0 else None


def sandbox_address(sandbox):
    code = ("import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
            f"s.connect(('{WEB_ALLOWED}', 9)); print(s.getsockname()[0])")
    return sandbox.process.exec(f"python3 -c \"{code}\"").result.strip()


def sandbox_index(sandbox):
    offset = int(ipaddress.ip_address(sandbox_address(sandbox))) - int(SANDBOX_SUBNET.network_address)
    return offset // 2


def create(client, **policy):
    return client.create(CreateSandboxFromSnapshotParams(**policy))


def test_uplink_goes_nowhere_else(net_server, internet):
    assert in_namespace(internet.name, "ip", "route", "show", "default").stdout.strip() == ""
    routes = in_hub(net_server, "ip", "-4", "route", "show", "default").stdout
    assert f"via {GATEWAY}" in routes
    assert len(routes.strip().splitlines()) == 1


def test_default_egress_works(client):
    sandbox = create(client)
    try:
        assert connects(sandbox, WEB_ALLOWED)
        assert connects(sandbox, WEB_OTHER)
        assert resolves(sandbox, "allowed.test") == WEB_ALLOWED
        assert "nameserver 100.96.0.1" in sandbox.process.exec("cat /etc/resolv.conf").result
    finally:
        client.delete(sandbox)


def test_block_all_blocks(client):
    sandbox = create(client, network_block_all=True)
    try:
        assert sandbox.network_block_all is True
        assert not connects(sandbox, WEB_ALLOWED)
        assert resolves(sandbox, "allowed.test") is None
    finally:
        client.delete(sandbox)


def test_cidr_allow_list(client):
    sandbox = create(client, network_allow_list=f"{WEB_ALLOWED}/32")
    try:
        assert connects(sandbox, WEB_ALLOWED)
        assert not connects(sandbox, WEB_DENIED)
        assert not connects(sandbox, WEB_OTHER)
        # Without a domain list every name resolves, but a resolved address outside the
        # CIDR list stays blocked.
        assert resolves(sandbox, "denied.test") == WEB_DENIED
        assert not connects(sandbox, WEB_DENIED)
    finally:
        client.delete(sandbox)


def test_domain_allow_list(client):
    sandbox = create(client, domain_allow_list="allowed.test")
    try:
        assert not connects(sandbox, WEB_ALLOWED)
        assert resolves(sandbox, "denied.test") is None
        assert resolves(sandbox, "allowed.test") == WEB_ALLOWED
        assert connects(sandbox, WEB_ALLOWED)
        assert not connects(sandbox, WEB_DENIED)
    finally:
        client.delete(sandbox)


def test_update_network_settings_both_ways(client):
    sandbox = create(client)
    try:
        assert connects(sandbox, WEB_ALLOWED)
        sandbox.update_network_settings(network_block_all=True)
        assert sandbox.network_block_all is True
        assert not connects(sandbox, WEB_ALLOWED)
        sandbox.update_network_settings(network_allow_list=f"{WEB_DENIED}/32")
        assert not connects(sandbox, WEB_ALLOWED)
        assert connects(sandbox, WEB_DENIED)
        sandbox.update_network_settings(network_block_all=False)
        assert sandbox.network_allow_list is None
        assert connects(sandbox, WEB_ALLOWED)
        assert client.get(sandbox.id).network_block_all is False
    finally:
        client.delete(sandbox)


def test_invalid_settings_rejected(net_server, client):
    sandbox = create(client)
    try:
        for body in ({"networkAllowList": "10.0.0.0/33"}, {"networkAllowList": "example.com"},
                     {"domainAllowList": "bad domain"}, {"domainAllowList": "*."}):
            status, error = net_server.request("POST", f"/sandbox/{sandbox.id}/network-settings", body)
            assert status == 400, body
            assert error["statusCode"] == 400
            assert "invalid" in error["message"]
        with pytest.raises(DaytonaError):
            create(client, network_allow_list="300.1.1.1/32")
        assert connects(sandbox, WEB_ALLOWED)
    finally:
        client.delete(sandbox)


def test_sandboxes_cannot_reach_each_other(client):
    first = create(client)
    second = create(client)
    try:
        second.process.exec("nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
        target = sandbox_address(second)
        deadline = time.monotonic() + 10
        while not connects(second, target, 8000) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert connects(second, target, 8000)
        assert not connects(first, target, 8000)
    finally:
        client.delete(first)
        client.delete(second)


def test_host_and_metadata_blocked(net_server, client):
    sandbox = create(client)
    try:
        assert connects(sandbox, WEB_ALLOWED)
        # 169.254.169.254 exists only in the test's namespace, with a listener on port 80, so
        # a packet that got through the hub would connect.
        assert not connects(sandbox, METADATA)
        assert not connects(sandbox, "127.0.0.1", net_server.port)
        assert not connects(sandbox, "100.96.0.1", net_server.port)
        assert not connects(sandbox, GATEWAY, 80)
        host_addresses = run("hostname", "-I").stdout.split()
        for address in host_addresses:
            if ":" not in address:
                assert not connects(sandbox, address, net_server.port), address
    finally:
        client.delete(sandbox)


def test_delete_removes_interface_and_rules(net_server, client):
    sandbox = create(client, network_allow_list=f"{WEB_ALLOWED}/32")
    index = sandbox_index(sandbox)
    assert f"dh{index}" in in_hub(net_server, "ip", "-o", "link").stdout
    assert f"sb{index}" in in_hub(net_server, "nft", "list", "table", "inet", "daytona").stdout
    client.delete(sandbox)
    assert f"dh{index}:" not in in_hub(net_server, "ip", "-o", "link").stdout
    rules = in_hub(net_server, "nft", "list", "table", "inet", "daytona").stdout
    assert f"sb{index} " not in rules
    assert f"\"dh{index}\"" not in rules


def test_policy_survives_restart_and_teardown_cleans_up(internet):
    # A namespace of its own: the module's server has its uplink in the shared one.
    own_internet = Internet()
    try:
        own_internet.start()
        check_restart_and_teardown(own_internet)
    finally:
        own_internet.stop()


def check_restart_and_teardown(internet):
    server = network_server(internet)
    try:
        server.start()
        client = client_for(server)
        open_sandbox = create(client)
        restricted = create(client, domain_allow_list="allowed.test")
        assert resolves(restricted, "allowed.test") == WEB_ALLOWED

        # Stop the server without deleting anything: the sandboxes keep running.
        server.process.terminate()
        server.process.wait(timeout=60)
        server.process = None
        assert os.path.ismount(hub_path(server))
        server.start()

        assert connects(open_sandbox, WEB_OTHER)
        assert resolves(restricted, "denied.test") is None
        assert not connects(restricted, WEB_DENIED)
        assert resolves(restricted, "allowed.test") == WEB_ALLOWED
        assert connects(restricted, WEB_ALLOWED)
    finally:
        server.stop()
        server.remove_data()

    # Teardown: no hub, no uplink veth in the test's namespace, no sandbox links on the host.
    assert not os.path.ismount(hub_path(server))
    deadline = time.monotonic() + 10
    while "daytona-uplink" in internet.links() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "daytona-uplink" not in internet.links()
    host_links = run("ip", "-o", "link", "show").stdout
    assert " dh" not in host_links and " ds" not in host_links
