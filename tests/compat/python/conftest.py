"""Fixtures that start a `daytona server` for the official Python SDK to talk to.

The server runs from the binaries under test (see tests/support/daytona_server.py for the
environment it reads), on a free loopback port, with a fresh data directory and the shared
image cache, so the default snapshot is built once per machine.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "support"))

from daytona_server import Server  # noqa: E402


@pytest.fixture(scope="session")
def server():
    instance = Server()
    try:
        instance.start()
        os.environ["DAYTONA_API_URL"] = instance.api_url
        os.environ["DAYTONA_API_KEY"] = instance.api_key
        yield instance
    finally:
        instance.stop()
        instance.remove_data()


@pytest.fixture(scope="session")
def daytona(server):
    from daytona import Daytona

    return Daytona()


@pytest.fixture(scope="module")
def sandbox(daytona):
    """One sandbox shared by the tests of a module."""
    created = daytona.create()
    yield created
    try:
        daytona.delete(created)
    except Exception:  # noqa: BLE001 - a test may have deleted it already
        pass


@pytest.fixture
def own_server():
    """A server of the test's own, for tests that restart it or change its settings."""
    instance = Server()
    instance.start()
    yield instance
    instance.stop()
    instance.remove_data()


def client_for(server):
    """An SDK client of `server`, without the environment variables."""
    from daytona import Daytona, DaytonaConfig

    return Daytona(DaytonaConfig(api_key=server.api_key, api_url=server.api_url))
