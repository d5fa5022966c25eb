"""The location topic (`perch/<location>/infer/<model>`, a shared
subscription) against a real mosquitto with two real agents: a departed
agent never keeps a location's requests waiting (docs/mqtt.md, "Agents that
leave a location").

- SIGTERM: the agent leaves the shared subscription before it disconnects;
  every later request is answered by the other agent, and what it had taken
  in while leaving is answered too.
- SIGKILL: the broker ends the agent's location session as soon as it
  notices the connection is gone (at once for a killed process); requests
  published after that are answered by the survivor, and every request the
  killed agent had acknowledged is answered when it comes back.
- A host that goes silent (SIGSTOP: the connection stays open) is noticed
  after 1.5 keepalives of the location link."""

import signal
import threading
import time

import pytest

from harness import wait_for
from mqtt_harness import (ANSWER_TIMEOUT, Broker, Client, metric, start_agent,
                          unique, wait_online)

MODEL = "identity_fp32"
SLOW = "slow"  # about 80 ms an inference: requests wait in the inbox
# The location link's keepalive (LocationLink::kKeepaliveSeconds). mosquitto
# drops a connection silent for 1.5 keepalives, checking every 5 s or so and
# in whole seconds: docs/mqtt.md's bound for a silent host.
LOCATION_KEEPALIVE = 5
SILENT_HOST_BOUND = 1.5 * LOCATION_KEEPALIVE + 5 + 1.5
BURST = 40
PACE = 0.005  # between the requests of a burst that b leaves during


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("broker")).start()
    yield broker
    broker.stop()


class Location:
    """Two agents (a and b) of one location, and an MQTT 5 client that asks
    on the location topic and listens on its own reply topic."""

    def __init__(self, servers, broker, tmp_path, models=(MODEL,), name=None):
        self.servers = servers
        self.broker = broker
        self.tmp_path = tmp_path
        self.models = models
        self.name = name or unique("site")
        self.agents = {device: self.start(device) for device in ("a", "b")}
        self.client = Client(broker.port, max_inflight=1000).connect()
        self.replies = unique("replies/")
        self.client.subscribe(self.replies)

    def start(self, device):
        """Starts (or restarts, on the same state) the agent device and waits
        until it says online (it takes location requests then)."""
        agent = start_agent(self.servers, self.broker, self.name, device,
                            self.models, state=self.tmp_path / device)
        watcher = Client(self.broker.port).connect()
        try:
            wait_online(watcher, self.name, device)
        finally:
            watcher.close()
        return agent

    def topic(self, model=MODEL):
        return f"perch/{self.name}/infer/{model}"

    def publish(self, number, model=MODEL, wait=True):
        """A request on the location topic, numbered by its correlation."""
        width = 1 if model == MODEL else 4
        body = {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                            "shape": [1, width], "data": [number] * width}]}
        return self.client.publish(self.topic(model), body,
                                   response_topic=self.replies,
                                   correlation=str(number).encode(),
                                   wait=wait)

    def ask(self, number, timeout=ANSWER_TIMEOUT):
        """Publishes request number and returns (device, seconds) of its
        answer; fails the test when none comes within timeout."""
        start = time.monotonic()
        self.publish(number)
        deadline = start + timeout
        while time.monotonic() < deadline:
            answer = self.client.next(deadline - time.monotonic())
            if answer is not None and int(answer.correlation) == number:
                return self.device_of(answer), time.monotonic() - start
        pytest.fail(f"location request {number} was not answered within "
                    f"{timeout} s")

    def device_of(self, answer):
        key = answer.json()["idempotency_key"]
        return next(d for d in self.agents
                    if key.startswith(f"perch-{self.name}-{d}/"))

    def collect(self, numbers, timeout):
        """{number: {idempotency keys}} of the answers that came within
        timeout for the requests numbers, and whatever repeats follow
        within a second."""
        keys = {}
        deadline = time.monotonic() + timeout
        while set(numbers) - set(keys) and time.monotonic() < deadline:
            answer = self.client.next(deadline - time.monotonic())
            if answer is not None:
                keys.setdefault(int(answer.correlation), set()).add(
                    answer.json()["idempotency_key"])
        for answer in self.client.collect(10**6, timeout=5, idle=1):
            keys.setdefault(int(answer.correlation), set()).add(
                answer.json()["idempotency_key"])
        return keys

    def close(self):
        self.client.close()


@pytest.fixture
def location(servers, broker, tmp_path):
    location = Location(servers, broker, tmp_path)
    yield location
    location.close()


def assert_each_answered_once(keys, numbers):
    missing = sorted(set(numbers) - set(keys))
    assert not missing, f"{len(missing)} requests never answered: {missing}"
    twice = {n: k for n, k in keys.items() if len(k) > 1}
    assert not twice, f"answered under two keys: {twice}"


def test_both_agents_answer_before_one_leaves(location):
    devices = [location.ask(n)[0] for n in range(10)]
    assert set(devices) == {"a", "b"}, devices


def test_after_sigterm_every_request_goes_to_the_other_agent(location):
    assert location.agents["b"].stop() == 0
    for number in range(30):
        device, seconds = location.ask(number)
        assert device == "a", f"request {number} answered by {device}"


def test_sigterm_while_requests_arrive_loses_none(location, tmp_path):
    """b leaves while a burst is being published: what the broker had routed
    to b before it left is taken in by b (answered now, or from its inbox
    after a restart), the rest goes to a, and nothing is left behind."""
    count = 200

    def publish_paced():
        for number in range(count):
            location.publish(number, wait=False)
            time.sleep(PACE)  # a steady flow, not synchronisation
    publisher = threading.Thread(target=publish_paced)
    publisher.start()
    wait_for(lambda: metric(location.agents["b"], "perch_mqtt_received_total")
             >= 10, 10, 0.01, what="b to take requests in")
    assert location.agents["b"].stop() == 0
    publisher.join(30)
    assert not publisher.is_alive()
    later = range(count, count + 10)
    for number in later:
        location.publish(number)
    location.agents["b"] = location.start("b")  # answers its inbox
    keys = location.collect(range(count + 10), timeout=30)
    assert_each_answered_once(keys, range(count + 10))
    for number in later:
        (key,) = keys[number]
        assert key.startswith(f"perch-{location.name}-a/"), (number, key)


def test_after_sigkill_later_requests_go_to_the_survivor(location):
    location.agents["b"].stop(signal.SIGKILL)
    seconds = []
    for number in range(30):
        device, took = location.ask(number)
        assert device == "a", f"request {number} answered by {device}"
        seconds.append(took)
    print(f"after the kill: answered in {min(seconds) * 1000:.1f} to "
          f"{max(seconds) * 1000:.1f} ms")


def test_upgraded_agent_leaves_its_old_session_membership(servers, broker,
                                                         tmp_path):
    """Earlier versions subscribed to the location on the agent's persistent
    session: an agent that resumes such a session drops that membership, or
    the session would take every second request once the agent stopped."""
    name = unique("site")
    old = Client(broker.port, client_id=f"perch-{name}-b", clean_start=False,
                 session_expiry=600).connect()
    old.subscribe(f"$share/perch/perch/{name}/infer/+")
    old.close()  # the session stays, and its membership with it
    location = Location(servers, broker, tmp_path, name=name)
    try:
        assert location.agents["b"].stop() == 0
        for number in range(20):
            device, _ = location.ask(number)
            assert device == "a", f"request {number} answered by {device}"
    finally:
        location.close()


def test_sigkill_loses_no_acknowledged_request(servers, broker, tmp_path):
    """b is killed with requests it acknowledged still in its inbox (the
    slow model keeps them there): they are answered when b comes back, and
    every request of the burst is answered once."""
    location = Location(servers, broker, tmp_path, models=(SLOW,))
    try:
        for number in range(BURST):
            location.publish(number, model=SLOW, wait=False)

        def all_taken_in():
            return sum(metric(agent, "perch_mqtt_received_total")
                       for agent in location.agents.values()) >= BURST
        wait_for(all_taken_in, 20, 0.01,
                 what="the agents to take in the whole burst")
        answered_by_b = metric(location.agents["b"],
                               "perch_mqtt_delivered_total")
        location.agents["b"].stop(signal.SIGKILL)
        assert answered_by_b < BURST // 2, \
            "b answered everything before the kill: nothing was left to lose"
        later = range(BURST, BURST + 5)
        for number in later:
            location.publish(number, model=SLOW)
        location.agents["b"] = location.start("b")
        keys = location.collect(range(BURST + 5), timeout=60)
        assert_each_answered_once(keys, range(BURST + 5))
    finally:
        location.close()


def test_silent_host_leaves_within_the_keepalive_bound(location):
    """SIGSTOP keeps b's connections open but silent, as a host that lost
    power or its cable. A request every 0.1 s from then on: those the broker
    routes to b before it gives up on it are not answered (b never takes
    them in); every one published later than the documented bound is
    answered by a."""
    b = location.agents["b"]
    b.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    published = {}
    try:
        number = 0
        while time.monotonic() - stopped < SILENT_HOST_BOUND + 2:
            published[number] = time.monotonic() - stopped
            location.publish(number)
            number += 1
            time.sleep(0.1)  # the rate of the probe, not synchronisation
        keys = location.collect(list(published), timeout=ANSWER_TIMEOUT)
    finally:
        b.process.send_signal(signal.SIGCONT)
        b.stop(signal.SIGKILL)
    unanswered = sorted(n for n in published if n not in keys)
    left_after = published[unanswered[-1]] if unanswered else 0
    print(f"the last request routed to the silent agent was published "
          f"{left_after:.2f} s after it went silent")
    late = [n for n in unanswered if published[n] > SILENT_HOST_BOUND]
    assert not late, (f"requests published more than {SILENT_HOST_BOUND} s "
                      f"after b went silent were not answered: "
                      f"{[round(published[n], 2) for n in late]}")
    for n, answer_keys in keys.items():
        assert all(k.startswith(f"perch-{location.name}-a/")
                   for k in answer_keys), (n, answer_keys)
