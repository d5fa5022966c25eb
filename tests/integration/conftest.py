"""Fixtures that run perch for the black-box tests in this directory.

`make integration-test` builds everything and runs them. By hand, after
`make build test-models`:

    /usr/bin/python3 -m pytest tests/integration

with PERCH_BIN, PERCH_BUILD, PERCH_TEST_MODELS and PERCH_WAKEWORD_MODELS
overriding where the binary, the build tree (for ort_reference) and the
models are; see harness.py for the defaults.
"""

import pytest

from harness import (ORT_REFERENCE, PERCH_BIN, TEST_MODELS, PerchServer,
                     ServerPool)
from hub_harness import HubPool, HubServer


def pytest_sessionstart(session):
    missing = [f"{what} ({path})" for what, path in (
        ("perch binary", PERCH_BIN),
        ("ort_reference", ORT_REFERENCE),
        ("test models", TEST_MODELS)) if not path.exists()]
    if missing:
        pytest.exit("missing: " + ", ".join(missing)
                    + "; run `make build test-models` first", returncode=2)


@pytest.fixture(scope="module")
def module_servers(tmp_path_factory):
    """Servers shared by the tests of a module, stopped after its last."""
    pool = ServerPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture
def servers(tmp_path_factory):
    """Servers for one test, for tests that change a repository."""
    pool = ServerPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def module_hubs(tmp_path_factory):
    """Hubs shared by the tests of a module, stopped after its last."""
    pool = HubPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture
def hubs(tmp_path_factory):
    """Hubs for one test, for tests that need their own flags or data."""
    pool = HubPool(tmp_path_factory)
    yield pool
    pool.close()


@pytest.fixture(autouse=True)
def no_server_went_away():
    """Fails the test during which any running server exited or crashed."""
    yield
    for server in list(PerchServer.running) + list(HubServer.running):
        server.assert_alive()
