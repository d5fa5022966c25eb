"""Store and forward over MQTT: an event stream of 10,000 messages survives
the broker stopping and the agent being killed (nothing lost, first arrivals
in order, repeats only with the same idempotency key), and the outbox keeps
to its cap, overflow policy and time-to-live.

The broker keeps its sessions across a restart (persistence on), so it holds
the agent's requests and the subscriber's answers while either is away."""

import json
import signal
import threading
import time

import pytest

from harness import copy_models, wait_for
from mqtt_harness import (Broker, Client, PublishFilter, agent_args, metric,
                          start_agent, unique, wait_metric, wait_online)

LOCATION = "plant"
STREAM_LENGTH = 10_000
STREAM_TIMEOUT = 60  # for all 10,000 answers, outages included
SESSION_EXPIRY = 600


def numbered(i, shape=(1, 1)):
    """A request whose answer (identity) carries the number i."""
    count = shape[0] * shape[1]
    return {"inputs": [{"name": "INPUT0", "datatype": "FP32",
                        "shape": list(shape), "data": [i] * count}]}


def number_of(message):
    return int(message.json()["outputs"][0]["data"][0])


def stream_repo(tmp_path, model, input_topic, output_topic):
    """A repository where model answers every message on input_topic (a
    filter) on output_topic."""
    repo = copy_models(tmp_path / "repo", [model])
    (repo / model / "model.json").write_text(json.dumps(
        {"mqtt": {"input_topic": input_topic, "output_topic": output_topic}}))
    return repo


class Stream:
    """An event stream set up for one test: a persistent subscriber to the
    output topic, and the topic to publish numbered inputs on."""

    def __init__(self, tmp_path, broker, model="identity_fp32"):
        base = unique("sensors")
        self.input_filter = f"{base}/+/in"
        self.input_topic = f"{base}/unit-1/in"
        self.output_topic = f"{base}/out"
        self.repo = stream_repo(tmp_path, model, self.input_filter,
                                self.output_topic)
        self.broker = broker
        self.subscriber = Client(broker.port, clean_start=False,
                                 session_expiry=SESSION_EXPIRY).connect()
        self.subscriber.subscribe(self.output_topic)
        self.answers = []
        self.published = False

    def publish(self, count, background=False):
        """Publishes inputs 0..count-1 (QoS 1) and waits until the broker
        has them all; in the background, returns the thread doing it."""
        def run():
            publisher = Client(self.broker.port, max_inflight=1000).connect()
            infos = [publisher.publish(self.input_topic, numbered(i),
                                       wait=False) for i in range(count)]
            for info in infos:
                info.wait_for_publish(STREAM_TIMEOUT)
            self.published = all(info.is_published() for info in infos)
            publisher.close()
        if background:
            thread = threading.Thread(target=run, daemon=True)
            thread.start()
            return thread
        run()
        assert self.published, "the broker did not take every input"
        return None

    def receive(self, count, timeout=STREAM_TIMEOUT):
        """Collects answers until all of 0..count-1 arrived (or timeout),
        then whatever repeats follow within a second."""
        seen = {number_of(m) for m in self.answers}
        deadline = time.monotonic() + timeout
        while len(seen) < count and time.monotonic() < deadline:
            message = self.subscriber.next(deadline - time.monotonic())
            if message is None:
                break
            self.answers.append(message)
            seen.add(number_of(message))
        self.answers += self.subscriber.collect(10**6, timeout=5, idle=1)
        return self.answers

    def take_received(self):
        """Moves what the subscriber has received so far into answers."""
        while not self.subscriber.messages.empty():
            self.answers.append(self.subscriber.messages.get())
        return len(self.answers)

    def check(self, count):
        """Asserts: every number answered, first arrivals in order, and a
        number answered twice only under the same idempotency key."""
        keys = {}
        first_arrivals = []
        for message in self.answers:
            number = number_of(message)
            key = message.json()["idempotency_key"]
            assert message.user_property("idempotency-key") == key
            if number not in keys:
                first_arrivals.append(number)
            keys.setdefault(number, set()).add(key)
        missing = sorted(set(range(count)) - set(keys))
        assert not missing, (f"{len(missing)} of {count} answers never "
                             f"arrived, e.g. {missing[:10]}")
        out_of_order = [(a, b) for a, b in zip(first_arrivals,
                                               first_arrivals[1:]) if b < a]
        assert not out_of_order, f"answers out of order: {out_of_order[:10]}"
        rekeyed = {n: sorted(k) for n, k in keys.items() if len(k) > 1}
        assert not rekeyed, (
            f"{len(rekeyed)} inputs were answered more than once under "
            f"different idempotency keys, e.g. "
            f"{dict(list(rekeyed.items())[:3])}")
        return len(self.answers) - count  # the repeats

    def close(self):
        self.subscriber.close()


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    yield broker
    broker.stop()


def start_stream_agent(servers, broker_url, stream, tmp_path, extra=()):
    agent = servers.start(repo=stream.repo, args=agent_args(
        broker_url, LOCATION, "d1", tmp_path / "state", *extra))
    return agent


# The agent counts a request as received before its acknowledgement is on
# the wire; a broker stopped in between sends the request again. The tests
# that are about answers wait this long after the last request was counted.
ACK_SETTLE = 0.5


def settle_acknowledgements():
    time.sleep(ACK_SETTLE)


def start_with_backlog(servers, broker, stream, tmp_path):
    """Publishes the whole stream while the agent is away (its session at
    the broker queues the inputs), then starts the agent on that backlog:
    it takes requests faster than it answers them, so there is a moment
    when every input is accepted and many answers are still to come."""
    first = start_stream_agent(servers, broker.url, stream, tmp_path)
    wait_online(stream.subscriber, LOCATION, "d1")
    assert first.stop() == 0
    stream.publish(STREAM_LENGTH)
    agent = start_stream_agent(servers, broker.url, stream, tmp_path)
    wait_metric(agent, "perch_mqtt_received_total", STREAM_LENGTH, 30)
    settle_acknowledgements()
    delivered = metric(agent, "perch_mqtt_delivered_total")
    assert delivered < STREAM_LENGTH * 0.9, (
        f"{delivered:.0f} answers were out by the time the agent had taken "
        f"every input")
    return agent


def test_stream_survives_broker_restart(servers, broker, tmp_path):
    """The broker stops (saving its sessions) with every input accepted and
    answers still flowing; 1 s later it is back on the same port."""
    stream = Stream(tmp_path, broker)
    agent = start_with_backlog(servers, broker, stream, tmp_path)
    broker.stop()
    stopped_at = stream.take_received()
    time.sleep(1)
    broker.start()
    stream.receive(STREAM_LENGTH)
    stream.close()
    repeats = stream.check(STREAM_LENGTH)
    print(f"broker stopped after {stopped_at} answers; {repeats} repeats")
    assert stopped_at < STREAM_LENGTH
    assert metric(agent, "perch_mqtt_connects_total") >= 2
    wait_for(lambda: metric(agent, "perch_queue_depth", "outbox") == 0, 5,
             what="the outbox to empty")
    assert metric(agent, "perch_queue_depth", "mqtt-inbox") == 0


def test_stream_survives_agent_sigkill_while_answering(servers, broker,
                                                       tmp_path):
    """Killed with every input accepted and answers still flowing, then
    started again on the same --state."""
    stream = Stream(tmp_path, broker)
    agent = start_with_backlog(servers, broker, stream, tmp_path)
    agent.stop(signal.SIGKILL)
    killed_at = stream.take_received()
    restarted = start_stream_agent(servers, broker.url, stream, tmp_path)
    stream.receive(STREAM_LENGTH)
    stream.close()
    repeats = stream.check(STREAM_LENGTH)
    print(f"agent killed after {killed_at} answers; {repeats} repeats")
    assert killed_at < STREAM_LENGTH
    wait_for(lambda: metric(restarted, "perch_queue_depth", "outbox") == 0, 5,
             what="the restarted agent's outbox to empty")


def test_stream_survives_agent_sigkill_while_receiving(servers, broker,
                                                       tmp_path):
    """Killed three times while requests are still arriving: a request the
    agent took but had not acknowledged yet comes again from the broker,
    and its answer must repeat the first answer's key."""
    stream = Stream(tmp_path, broker)
    agent = start_stream_agent(servers, broker.url, stream, tmp_path)
    wait_online(stream.subscriber, LOCATION, "d1")
    publisher = stream.publish(STREAM_LENGTH, background=True)
    accepted = 0
    redelivered = 0
    for _ in range(3):
        wait_metric(agent, "perch_mqtt_received_total", STREAM_LENGTH / 5, 30)
        accepted += metric(agent, "perch_mqtt_received_total")
        redelivered += metric(agent, "perch_mqtt_redelivered_total")
        agent.stop(signal.SIGKILL)
        agent = start_stream_agent(servers, broker.url, stream, tmp_path)
    publisher.join(STREAM_TIMEOUT)
    assert stream.published, "the broker did not take every input"
    stream.receive(STREAM_LENGTH)
    stream.close()
    repeats = stream.check(STREAM_LENGTH)
    redelivered += metric(agent, "perch_mqtt_redelivered_total")
    print(f"agent killed three times while receiving; {repeats} repeats; "
          f"{redelivered:.0f} requests came again and were recognised")
    assert accepted < STREAM_LENGTH


# --- outbox cap, overflow policy and time-to-live -------------------------------


def answer_requests(client, agent, count, replies, first=0):
    """Sends count identity requests with reply topic replies, one at a time,
    each once the agent has processed the one before (so that its inbox
    never holds more than one)."""
    for i in range(first, first + count):
        before = metric(agent, "perch_mqtt_received_total")
        client.publish(f"perch/{LOCATION}/{agent.device}/infer/identity_fp32",
                       numbered(i), response_topic=replies,
                       correlation=str(i).encode())
        wait_metric(agent, "perch_mqtt_received_total", before + 1, 10)
        wait_for(lambda: metric(agent, "perch_queue_depth", "mqtt-inbox") == 0,
                 10, 0.02, what=f"request {i} to leave the inbox")


def lossy_agent(servers, broker, tmp_path, *extra):
    """An agent behind a PublishFilter, online, with a client listening on a
    reply topic."""
    proxy = PublishFilter(broker.port)
    agent = start_agent(servers, proxy.url, LOCATION, unique("dev"),
                        ["identity_fp32"], state=tmp_path / "state",
                        extra=extra)
    client = Client(broker.port).connect()
    client.replies = unique("replies/")
    client.subscribe(client.replies)
    wait_online(client, LOCATION, agent.device)
    return proxy, agent, client


def reconnect(proxy, agent):
    """Lets the agent's publishes through again, over a new connection."""
    connects = metric(agent, "perch_mqtt_connects_total")
    proxy.lose_publishes = False
    proxy.cut()
    assert wait_metric(agent, "perch_mqtt_connects_total", connects + 1,
                       20) > connects, "the agent did not reconnect"


def answered(messages):
    return sorted(int(m.correlation) for m in messages)


@pytest.mark.parametrize("policy,kept", [
    ("drop-oldest", range(7, 12)),
    ("reject-new", range(0, 5)),
])
def test_outbox_cap_and_overflow_policy(servers, broker, tmp_path, policy,
                                        kept):
    """12 answers the broker never acknowledges, 5 records of room: the
    outbox keeps the newest (drop-oldest) or the first (reject-new) 5,
    counts the other 7, and delivers the kept ones once it can."""
    proxy, agent, client = lossy_agent(
        servers, broker, tmp_path, "--outbox-max-records", 5,
        "--outbox-overflow", policy)
    try:
        proxy.lose_publishes = True
        answer_requests(client, agent, 12, client.replies)
        assert wait_for(lambda: metric(agent, "perch_queue_depth",
                                       "outbox") == 5, 5)
        counter = "perch_queue_dropped_total" if policy == "drop-oldest" \
            else "perch_queue_rejected_total"
        assert metric(agent, counter, "outbox") == 7
        assert client.collect(1, timeout=0.5) == []
        reconnect(proxy, agent)
        arrived = answered(client.collect(100, timeout=10, idle=2))
        assert wait_for(lambda: metric(agent, "perch_queue_depth",
                                       "outbox") == 0, 5)
        # The other 7 were published once (and lost) before the outbox let
        # go of them: nothing but the outbox resends, so they never arrive.
        assert arrived == list(kept), arrived
        assert metric(agent, "perch_queue_depth", "mqtt-inbox") == 0
        answer_requests(client, agent, 1, client.replies, first=100)
        assert answered(client.collect(1)) == [100]
    finally:
        client.close()
        proxy.close()


def test_outbox_ttl_drops_what_waited_too_long(servers, broker, tmp_path):
    """Answers the broker does not acknowledge for 1 s leave the outbox
    undelivered, are counted as expired, and are not sent again later."""
    proxy, agent, client = lossy_agent(servers, broker, tmp_path,
                                       "--outbox-ttl", 1)
    try:
        proxy.lose_publishes = True
        answer_requests(client, agent, 5, client.replies)
        assert wait_metric(agent, "perch_queue_expired_total", 5, 5,
                           "outbox") == 5
        assert metric(agent, "perch_queue_depth", "outbox") == 0
        reconnect(proxy, agent)
        late = client.collect(10, timeout=3)
        assert metric(agent, "perch_mqtt_received_total") == 5
        lost_keys = {json.loads(p[p.index(b"{"):])["idempotency_key"]
                     for p in proxy.lost_packets if b"idempotency_key" in p}
        assert late == [], (
            f"answers counted as expired arrived after the reconnect: "
            f"{answered(late)}; the very messages published before (same "
            f"keys): {all(m.json()['idempotency_key'] in lost_keys for m in late)}")
        answer_requests(client, agent, 1, client.replies, first=100)
        assert answered(client.collect(1)) == [100]
    finally:
        client.close()
        proxy.close()


def test_outbox_ttl_across_broker_outage(servers, broker, tmp_path):
    """The broker stops right after the agent accepted the requests (a slow
    model keeps their answers coming after that); it is back 3 s later,
    when every waiting answer is past its 1 s time-to-live: those never
    arrive, and each is counted as expired."""
    stream = Stream(tmp_path, broker, model="slow")
    count = 10
    agent = start_stream_agent(servers, broker.url, stream, tmp_path,
                               extra=["--outbox-ttl", 1])
    wait_online(stream.subscriber, LOCATION, "d1")
    publisher = Client(broker.port).connect()
    for i in range(count):
        publisher.publish(stream.input_topic, numbered(i, (1, 4)))
    publisher.close()
    wait_metric(agent, "perch_mqtt_received_total", count, 10)
    time.sleep(0.2)  # the acknowledgements of the requests reach the broker
    broker.stop()
    assert wait_for(lambda: metric(agent, "perch_mqtt_connected") == 0, 5)
    delivered = metric(agent, "perch_mqtt_delivered_total")
    assert delivered < count, "every answer was out before the broker stopped"
    # Every answer made and waiting, then older than its time-to-live.
    assert wait_for(lambda: metric(agent, "perch_queue_depth", "mqtt-inbox")
                    == 0, 20)
    time.sleep(3)
    broker.start()
    assert wait_metric(agent, "perch_queue_expired_total", count - delivered,
                       20, "outbox") == count - delivered
    assert metric(agent, "perch_queue_depth", "outbox") == 0
    arrived = stream.subscriber.collect(count, timeout=3, idle=2)
    stream.close()
    # Requests whose acknowledgement the stopping broker did not get come
    # again; they are recognised, not answered again.
    assert metric(agent, "perch_mqtt_received_total") == count
    # At most one answer was on its way (unacknowledged) when the broker
    # stopped: the broker may have it although the agent counted it expired.
    assert delivered <= len(arrived) <= delivered + 1, (
        f"{delivered:.0f} answers delivered before the broker stopped, "
        f"{metric(agent, 'perch_mqtt_redelivered_total'):.0f} requests "
        f"received again, {len(arrived)} answers arrived: "
        f"{[m.payload for m in arrived]}\n" + agent.logs() + broker.logs())


def test_outbox_cap_does_not_limit_accepted_requests(servers, broker,
                                                     tmp_path):
    """With the broker up, answers leave the outbox as they are made, so a
    cap of 3 never bites; 8 requests to a slow model queue up as accepted
    requests, and each must be answered (the cap is the outbox's, and an
    accepted request is never dropped)."""
    agent = start_agent(servers, broker, LOCATION, unique("dev"), ["slow"],
                        state=tmp_path / "state",
                        extra=["--outbox-max-records", 3])
    client = Client(broker.port).connect()
    replies = unique("replies/")
    client.subscribe(replies)
    wait_online(client, LOCATION, agent.device)
    count = 8
    for i in range(count):
        client.publish(f"perch/{LOCATION}/{agent.device}/infer/slow",
                       numbered(i, (1, 4)), response_topic=replies,
                       correlation=str(i).encode(), wait=False)
    arrived = client.collect(count, timeout=10)
    client.close()
    assert answered(arrived) == list(range(count)), (
        f"answered {answered(arrived)}; inbox rejected "
        f"{metric(agent, 'perch_queue_rejected_total', 'mqtt-inbox'):.0f}")
    for message in arrived:
        assert "outputs" in message.json(), message
