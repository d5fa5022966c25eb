"""A broker address that drops connection attempts instead of refusing
them (a firewall, a host gone from the network): libmosquitto's connect is
a blocking connect() that waits out the kernel's SYN retries (about two
minutes). The agent probes the address first (src/mqtt/tcp_probe.h), so it
keeps serving over HTTP and a SIGTERM ends it at once, instead of after
that wait.

On loopback, a listener whose accept queue is full stands for such an
address: the kernel drops the SYNs it cannot queue."""

import socket

import pytest

from harness import assert_stops_within, wait_for
from mqtt_harness import agent_args


@pytest.fixture
def black_hole():
    """A loopback port that drops SYNs: listening, never accepting, its
    accept queue filled. Yields the port."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = []
    for _ in range(4):
        filler = socket.socket()
        filler.setblocking(False)
        try:
            filler.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        fillers.append(filler)

    def drops():
        with socket.socket() as probe:
            probe.settimeout(0.5)
            try:
                probe.connect(("127.0.0.1", port))
                return False
            except socket.timeout:
                return True
    wait_for(drops, 5, what="the full listener to drop connection attempts")
    yield port
    for sock in fillers + [listener]:
        sock.close()


def test_a_broker_address_that_drops_connections_stalls_nothing(servers, black_hole,
                                                                  tmp_path):
    agent = servers.start(["identity_fp32"], args=agent_args(
        f"mqtt://127.0.0.1:{black_hole}", "plant-a", "d1", tmp_path / "state"))
    wait_for(lambda: "connecting to 127.0.0.1" in agent.logs(), 10,
             what=lambda: "the agent to try the broker:\n" + agent.logs()[-2000:])
    response = agent.infer("identity_fp32", {"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [1.0]}]})
    assert response.status_code == 200, response.text
    assert_stops_within(agent, 4, "while its broker's address dropped "
                        "connection attempts")
