"""Clocks that jump: an agent whose wall clock starts in 1970 (a Raspberry
Pi without a real-time clock, before NTP answers) or years ahead, then
steps to the right time, run under Debian's libfaketime (the monotonic
clock is left alone, as an NTP step leaves it). Answers waiting in the
outbox neither expire early because of the jump nor outlive their
time-to-live, the agent keeps serving and reconnecting, and the stamps
taken before the step are corrected (perch_queue_clock_jumps_total)."""

import time
from pathlib import Path

import pytest

from harness import wait_for
from mqtt_harness import (Broker, Client, PublishFilter, metric, start_agent,
                          unique, wait_metric, wait_online)
from test_mqtt_durability import answer_requests, reconnect

LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")
LOCATION = "plant"

pytestmark = pytest.mark.skipif(
    not LIBFAKETIME.exists(),
    reason="Debian's faketime is not installed (scripts/bootstrap.sh)")


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    yield broker
    broker.stop()


class FakeClock:
    """The agent's wall clock, through libfaketime: a file it reads on
    every clock call (no cache), so the test can step it."""

    def __init__(self, folder, start):
        self.file = Path(folder) / "faketime"
        self.set(start)

    def set(self, spec):
        self.file.write_text(spec + "\n")

    def environment(self, monkeypatch):
        monkeypatch.setenv("LD_PRELOAD", str(LIBFAKETIME))
        monkeypatch.setenv("FAKETIME_TIMESTAMP_FILE", str(self.file))
        monkeypatch.setenv("FAKETIME_NO_CACHE", "1")
        monkeypatch.setenv("FAKETIME_DONT_FAKE_MONOTONIC", "1")


def faked_agent(servers, broker, tmp_path, monkeypatch, clock, *extra):
    proxy = PublishFilter(broker.port)
    with monkeypatch.context() as scoped:
        clock.environment(scoped)
        agent = start_agent(servers, proxy.url, LOCATION, unique("dev"),
                            ["identity_fp32"], state=tmp_path / "state",
                            extra=extra)
    client = Client(broker.port).connect()
    client.replies = unique("replies/")
    client.subscribe(client.replies)
    wait_online(client, LOCATION, agent.device)
    return proxy, agent, client


def test_booting_in_1970_then_stepping_expires_nothing_early(
        servers, broker, tmp_path, monkeypatch):
    clock = FakeClock(tmp_path, "@1970-01-02 00:00:00")
    proxy, agent, client = faked_agent(servers, broker, tmp_path, monkeypatch,
                                       clock, "--outbox-ttl", 3600)
    try:
        proxy.lose_publishes = True
        answer_requests(client, agent, 5, client.replies)
        wait_for(lambda: metric(agent, "perch_queue_depth", "outbox") == 5, 5)
        clock.set("+0")  # NTP answered: 56 years later
        time.sleep(0.1)
        # A local request still works, and the outbox still holds all five.
        assert agent.infer("identity_fp32", {"inputs": [{
            "name": "INPUT0", "datatype": "FP32", "shape": [1, 1],
            "data": [1.0]}]}).status_code == 200
        reconnect(proxy, agent)
        arrived = client.collect(5, timeout=10)
        assert sorted(int(m.correlation) for m in arrived) == list(range(5))
        assert metric(agent, "perch_queue_expired_total", "outbox") == 0
        assert metric(agent, "perch_queue_clock_jumps_total", "outbox") >= 1
    finally:
        client.close()
        proxy.close()


def test_a_clock_years_ahead_stepped_back_keeps_nothing_forever(
        servers, broker, tmp_path, monkeypatch):
    clock = FakeClock(tmp_path, "+5y")
    proxy, agent, client = faked_agent(servers, broker, tmp_path, monkeypatch,
                                       clock, "--outbox-ttl", 2)
    try:
        proxy.lose_publishes = True
        answer_requests(client, agent, 3, client.replies)
        wait_for(lambda: metric(agent, "perch_queue_depth", "outbox") == 3, 5)
        clock.set("+0")  # back five years
        # Stamped in the future, they would wait five years; their real
        # age (the monotonic clock) expires them after 2 s.
        assert wait_metric(agent, "perch_queue_expired_total", 3, 10,
                           "outbox") == 3
        assert metric(agent, "perch_queue_clock_jumps_total", "outbox") >= 1
    finally:
        client.close()
        proxy.close()
