"""A disk that cannot take the MQTT inbox's next write: the request is never
acknowledged, so the broker keeps it, and the agent answers it once the
disk has room again. libmosquitto queues a request's PUBACK before it hands
the request over and writes it after; the agent drops the connection in
between when the inbox refuses the request.

The agent runs with RLIMIT_FSIZE (SIGXFSZ ignored): a write that would grow
a file past the limit fails with EFBIG, as a full disk fails with ENOSPC."""

import signal
import time

import pytest

from harness import wait_for
from mqtt_harness import Broker, Client, agent_args, unique, wait_online

MAX_FILE_BYTES = 96 * 1024
REQUESTS = 60
ANSWERS_TIMEOUT = 60


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    yield broker
    broker.stop()


def with_file_size_limit(server, limit):
    """Starts server's command under RLIMIT_FSIZE = limit."""
    code = ("import os, resource, signal, sys; "
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit})); "
            "os.execv(sys.argv[1], sys.argv[1:])")
    server.command = ["/usr/bin/python3", "-c", code, *server.command]
    return server


def request(number):
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1],
                        "data": [number]}]}


def test_a_request_the_inbox_cannot_take_is_answered_once_it_can(
        servers, broker, tmp_path):
    location, device = unique("full"), "d1"
    state = tmp_path / "state"
    args = agent_args(broker.url, location, device, state)
    topic = f"perch/{location}/{device}/infer/identity_fp32"
    reply = unique("replies/")
    requester = Client(broker.port).connect()
    requester.subscribe(reply)
    watcher = Client(broker.port).connect()

    agent = with_file_size_limit(
        servers.prepare(["identity_fp32"], args=args), MAX_FILE_BYTES).start()
    wait_online(watcher, location, device)
    for number in range(REQUESTS):
        requester.publish(topic, request(number), response_topic=reply,
                          correlation=str(number).encode(), wait=False)
    wait_for(lambda: "could not be accepted" in agent.logs(), 30,
             what="the inbox refusing a request")
    agent.stop(signal.SIGKILL)

    # Room again: the same agent (same state, same MQTT session) restarts.
    servers.start(repo=agent.repo, args=args)
    answered = set()
    deadline = time.monotonic() + ANSWERS_TIMEOUT
    while len(answered) < REQUESTS and time.monotonic() < deadline:
        message = requester.next(deadline - time.monotonic())
        if message is not None:
            answered.add(int(message.correlation.decode()))
    missing = sorted(set(range(REQUESTS)) - answered)
    assert not missing, (f"{len(missing)} requests were acknowledged but "
                         f"never answered, e.g. {missing[:5]}")
    requester.close()
    watcher.close()
