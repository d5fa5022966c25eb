"""Inference over MQTT against a real mosquitto: request and reply (MQTT 5
Response Topic + Correlation Data, MQTT 3.1.1 "reply_to" + "id"), device and
location topics, shared subscriptions, the retained status with its last
will, malformed messages, and an agent started before its broker."""

import json
import re
import signal
import threading
import time

import numpy as np
import pytest

import oip
from harness import project_version
from mqtt_harness import (ANSWER_TIMEOUT, V5, V311, Broker, Client,
                          start_agent, metric, status_topic, unique,
                          wait_metric, wait_online)

LOCATION = "lab"
DEVICE = "d1"
MODELS = ["identity_fp32", "add_sub"]
MAX_JSON_DEPTH = 64  # the bridge's nesting limit for a payload


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("broker")).start()
    yield broker
    broker.stop()


@pytest.fixture(scope="module")
def agent(module_servers, broker, tmp_path_factory):
    agent = start_agent(module_servers, broker, LOCATION, DEVICE, MODELS,
                        state=tmp_path_factory.mktemp("state"))
    with_client(broker, lambda c: wait_online(c, LOCATION, DEVICE))
    return agent


def with_client(broker, use, protocol=V5):
    client = Client(broker.port, protocol=protocol).connect()
    try:
        return use(client)
    finally:
        client.close()


@pytest.fixture
def client(broker, agent):
    """An MQTT 5 client listening on its own reply topics and on the agent's
    results and errors topics."""
    client = Client(broker.port).connect()
    client.replies = unique("replies/")
    client.subscribe(client.replies + "/#")
    client.subscribe(f"perch/{LOCATION}/{DEVICE}/errors")
    client.subscribe(f"perch/{LOCATION}/{DEVICE}/results/#")
    yield client
    client.close()


def device_topic(model, location=LOCATION, device=DEVICE):
    return f"perch/{location}/{device}/infer/{model}"


def location_topic(model, location=LOCATION):
    return f"perch/{location}/infer/{model}"


def identity_request(values, request_id=None):
    array = np.asarray(values, dtype=np.float32).reshape(1, -1)
    body = {"inputs": [oip.json_input("INPUT0", array, "FP32")]}
    if request_id is not None:
        body["id"] = request_id
    return body


def add_sub_request(seed):
    rng = np.random.default_rng(seed)
    a, b = (rng.standard_normal((2, 4)).astype(np.float32) for _ in "ab")
    return {"inputs": [oip.json_input("INPUT0", a, "FP32"),
                       oip.json_input("INPUT1", b, "FP32")]}, a, b


def expect(client, topic, timeout=ANSWER_TIMEOUT, match=None):
    """The first message on topic (that match accepts); others are kept."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.next(deadline - time.monotonic())
        if message is None:
            break
        if message.topic == topic and (match is None or match(message)):
            return message
        client.unmatched = getattr(client, "unmatched", []) + [message]
    seen = [m.topic for m in getattr(client, "unmatched", [])]
    pytest.fail(f"nothing on {topic} within {timeout} s; other topics seen: "
                f"{seen[-10:]}")


def ask(client, topic, body, protocol=V5, reply=None, correlation=None):
    """Sends a request with a reply topic (MQTT 5 property, or MQTT 3.1.1
    "reply_to" + "id" in the body) and returns the reply."""
    reply = reply or unique(client.replies + "/")
    correlation = correlation or unique("corr-").encode()
    if protocol == V5:
        client.publish(topic, body, response_topic=reply,
                       correlation=correlation)
        answer = expect(client, reply)
        assert answer.correlation == correlation, answer
    else:
        body = {**body, "reply_to": reply, "id": correlation.decode()}
        with_client_v311(client, lambda c: c.publish(topic, body))
        answer = expect(client, reply)
    return answer


def with_client_v311(client, use):
    v311 = Client(client.port, protocol=V311).connect()
    try:
        return use(v311)
    finally:
        v311.close()


def key_prefix(location=LOCATION, device=DEVICE):
    return f"perch-{location}-{device}/"


def assert_answer_shape(answer, location=LOCATION, device=DEVICE):
    """Every answer or error (as an MQTT 5 subscriber receives it): a JSON
    object whose first member is the idempotency key, the same key as a
    user property, and the content type application/json."""
    assert answer.payload.startswith(b'{"idempotency_key":'), answer
    body = answer.json()
    key = body["idempotency_key"]
    assert key.startswith(key_prefix(location, device)), key
    assert len(key) > len(key_prefix(location, device)), key
    assert answer.user_property("idempotency-key") == key, answer
    assert answer.content_type == "application/json", answer
    return body


def without_key(body):
    return {k: v for k, v in body.items() if k != "idempotency_key"}


def assert_still_answering(client):
    """A good request is answered correctly after whatever came before."""
    body, a, b = add_sub_request(99)
    answer = ask(client, device_topic("add_sub"), body)
    outputs = oip.outputs_by_name(answer.json())
    assert np.array_equal(outputs["OUTPUT0"], a + b), answer
    assert np.array_equal(outputs["OUTPUT1"], a - b), answer


# --- request and reply --------------------------------------------------------


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
@pytest.mark.parametrize("where", ["device", "location"])
def test_reply_equals_rest_answer(agent, client, protocol, where):
    request = identity_request([1.5, -2.25, 3e38, -1e-30, 7], "req-7")
    topic = device_topic("identity_fp32") if where == "device" \
        else location_topic("identity_fp32")
    answer = ask(client, topic, request, protocol,
                 correlation=b"req-7" if protocol == V311 else None)
    body = assert_answer_shape(answer)
    rest = agent.infer("identity_fp32", request)
    assert rest.status_code == 200, rest.text
    assert without_key(body) == rest.json()
    assert oip.same_bits(oip.outputs_by_name(body)["OUTPUT0"],
                         np.float32([[1.5, -2.25, 3e38, -1e-30, 7]]))


def test_correlation_data_is_echoed_byte_for_byte(client):
    correlation = bytes(range(256))
    answer = ask(client, device_topic("identity_fp32"), identity_request([1]),
                 correlation=correlation)
    assert answer.correlation == correlation


def test_each_request_gets_its_own_key(client):
    keys = {assert_answer_shape(ask(client, device_topic("identity_fp32"),
                                    identity_request([i])))["idempotency_key"]
            for i in range(5)}
    assert len(keys) == 5


@pytest.mark.parametrize("protocol", [V5, V311], ids=["mqtt5", "mqtt311"])
def test_answer_without_reply_topic_goes_to_results(client, protocol):
    request = identity_request([4, 2], unique("noreply-"))
    with_client_v311(client, lambda c: c.publish(
        device_topic("identity_fp32"), request)) if protocol == V311 \
        else client.publish(device_topic("identity_fp32"), request)
    answer = expect(client, f"perch/{LOCATION}/{DEVICE}/results/identity_fp32",
                    match=lambda m: m.json().get("id") == request["id"])
    body = assert_answer_shape(answer)
    assert body["model_name"] == "identity_fp32"
    assert oip.outputs_by_name(body)["OUTPUT0"].tolist() == [[4, 2]]


def test_mqtt_311_reply_echoes_id(client):
    answer = ask(client, device_topic("add_sub"), add_sub_request(3)[0], V311,
                 correlation=b"my id 3")
    assert answer.json()["id"] == "my id 3"


# --- shared subscription ------------------------------------------------------


def test_location_requests_are_shared_between_devices(servers, broker,
                                                      tmp_path):
    location = unique("site")
    for device in ("a", "b"):
        start_agent(servers, broker, location, device, ["identity_fp32"],
                    state=tmp_path / device)
        with_client(broker, lambda c: wait_online(c, location, device))
    client = Client(broker.port).connect()
    replies = unique("replies/")
    client.subscribe(replies)
    count = 40
    for i in range(count):
        client.publish(location_topic("identity_fp32", location),
                       identity_request([i]), response_topic=replies,
                       correlation=str(i).encode(), wait=False)
    answers = client.collect(count, timeout=20)
    answers += client.collect(10, timeout=1)  # no answer may come twice
    client.close()
    by_request = {}
    for answer in answers:
        by_request.setdefault(int(answer.correlation), []).append(answer)
    assert sorted(by_request) == list(range(count))
    assert all(len(a) == 1 for a in by_request.values()), \
        {i: len(a) for i, a in by_request.items() if len(a) > 1}
    devices = {}
    for i, (answer,) in by_request.items():
        assert oip.outputs_by_name(answer.json())["OUTPUT0"].tolist() == [[i]]
        key = answer.json()["idempotency_key"]
        device = next(d for d in ("a", "b")
                      if key.startswith(key_prefix(location, d)))
        devices[device] = devices.get(device, 0) + 1
    assert set(devices) == {"a", "b"}, devices


# --- status and last will -------------------------------------------------------


def retained_status(broker, location, device, timeout=ANSWER_TIMEOUT):
    """The retained status a new subscriber gets right away."""
    def read(client):
        client.subscribe(status_topic(location, device))
        message = client.next(timeout)
        assert message is not None, "no retained status"
        assert message.retain, message
        return message.json()
    return with_client(broker, read)


def wait_status(broker, location, device, state, timeout):
    def watch(client):
        client.subscribe(status_topic(location, device))
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            message = client.next(deadline - time.monotonic())
            if message is None:
                break
            last = message.json()
            if last["state"] == state:
                return last
        pytest.fail(f"status did not become {state} within {timeout} s "
                    f"(last: {last})")
    return with_client(broker, watch)


def test_status_online_then_offline_on_sigterm(servers, broker, tmp_path):
    device = unique("dev")
    agent = start_agent(servers, broker, LOCATION, device, MODELS,
                        state=tmp_path / "state")
    wait_status(broker, LOCATION, device, "online", 20)
    status = retained_status(broker, LOCATION, device)
    assert status == {"state": "online", "location": LOCATION,
                      "device": device, "version": project_version(),
                      "models": sorted(MODELS)}
    assert agent.stop() == 0
    offline = retained_status(broker, LOCATION, device)
    assert offline == {**status, "state": "offline"}


def test_last_will_says_offline_after_sigkill(servers, broker, tmp_path):
    device = unique("dev")
    agent = start_agent(servers, broker, LOCATION, device, MODELS,
                        state=tmp_path / "state")
    wait_status(broker, LOCATION, device, "online", 20)
    watcher = Client(broker.port).connect()
    watcher.subscribe(status_topic(LOCATION, device))
    online = watcher.next().json()
    assert online["state"] == "online"
    agent.stop(signal.SIGKILL)
    # The killed process's socket closes, so the broker sends the will at
    # once; a silent network would take 1.5 x the 30 s keepalive.
    will = watcher.next(50)
    watcher.close()
    assert will is not None, "no last will within 50 s"
    # The same document as the clean offline status.
    assert will.json() == {**online, "state": "offline"}
    assert retained_status(broker, LOCATION, device) == will.json()


# --- malformed messages ---------------------------------------------------------


def nested(depth):
    return "[" * depth + "1" + "]" * depth


GOOD = json.dumps(identity_request([1]))
MALFORMED = [
    pytest.param("identity_fp32", b'{"inputs": [', "json",
                 "InvalidArgument", id="invalid-json"),
    pytest.param("identity_fp32", b"", "json|empty", "InvalidArgument",
                 id="empty-payload"),
    pytest.param("identity_fp32", b"\xff\xfe{}", "json|utf", "InvalidArgument",
                 id="not-utf8"),
    pytest.param("identity_fp32", b"[1, 2]", "object", "InvalidArgument",
                 id="not-an-object"),
    pytest.param("identity_fp32",
                 ('{"inputs": [{"name": "INPUT0", "datatype": "FP32", '
                  '"shape": [1, 1], "data": ' + nested(100000) + "}]}").encode(),
                 "deep|depth|nest", "InvalidArgument", id="huge-nesting"),
    pytest.param("nosuch", GOOD.encode(), "nosuch", "NotFound",
                 id="unknown-model"),
    pytest.param("identity_fp32", json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "INT32", "shape": [1, 1],
         "data": [1]}]}).encode(), "INPUT0|INT32|FP32", "InvalidArgument",
        id="wrong-datatype"),
    pytest.param("identity_fp32", json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP33", "shape": [1, 1],
         "data": [1]}]}).encode(), "FP33", "InvalidArgument",
        id="unknown-datatype"),
    pytest.param("add_sub", json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [1, 4],
         "data": [1, 2, 3, 4]}]}).encode(), "INPUT1", "InvalidArgument",
        id="missing-input"),
    pytest.param("identity_fp32", json.dumps({"inputs": [
        {"name": "INPUT0", "datatype": "FP32", "shape": [2, 2],
         "data": [1, 2, 3]}]}).encode(), "INPUT0", "InvalidArgument",
        id="too-little-data"),
    pytest.param("identity_fp32", json.dumps({}).encode(), "inputs",
                 "InvalidArgument", id="no-inputs"),
]


def assert_error(message, model, topic, mention, code, request_id=None,
                 device=DEVICE):
    """The error body of every perch API ("error" and the Status code name
    in "code"), with what correlates it to the request."""
    body = assert_answer_shape(message, device=device)
    assert list(body)[:3] == ["idempotency_key", "error", "code"], body
    assert isinstance(body["error"], str) and body["error"], body
    assert re.search(mention, body["error"], re.IGNORECASE), body
    assert body["code"] == code, body
    assert body["model_name"] == model, body
    assert body["topic"] == topic, body
    if request_id is not None:
        assert body.get("id") == request_id, body
    return body


@pytest.mark.parametrize("model,payload,mention,code", MALFORMED)
def test_malformed_with_response_topic(client, model, payload, mention, code):
    """MQTT 5: the error goes to the Response Topic, with the correlation."""
    reply = unique(client.replies + "/")
    client.publish(device_topic(model), payload, response_topic=reply,
                   correlation=b"bad-1")
    error = expect(client, reply)
    assert error.correlation == b"bad-1"
    assert_error(error, model, device_topic(model), mention, code)
    assert_still_answering(client)


@pytest.mark.parametrize("model,payload,mention,code", MALFORMED)
def test_malformed_without_reply_topic(client, model, payload, mention, code):
    """No reply topic known: the error is an event on .../errors."""
    client.publish(device_topic(model), payload)
    error = expect(client, f"perch/{LOCATION}/{DEVICE}/errors")
    assert_error(error, model, device_topic(model), mention, code)
    assert_still_answering(client)


@pytest.mark.parametrize("model,payload,mention,code", [
    p for p in MALFORMED if p.id in (
        "unknown-model", "wrong-datatype", "unknown-datatype",
        "missing-input", "too-little-data", "no-inputs")])
def test_malformed_with_reply_to_in_body(client, model, payload, mention,
                                         code):
    """MQTT 3.1.1: a parsable body names reply_to and id, so the error goes
    there, echoing the id."""
    reply = unique(client.replies + "/")
    body = {**json.loads(payload), "reply_to": reply, "id": "bad-311"}
    with_client_v311(client, lambda c: c.publish(device_topic(model), body))
    error = expect(client, reply)
    assert_error(error, model, device_topic(model), mention, code, "bad-311")
    assert_still_answering(client)


@pytest.mark.parametrize("reply_to", ["a/+/b", "a/#", "x" * 70000],
                         ids=["plus", "hash", "too-long"])
def test_reply_to_that_is_not_a_topic(client, reply_to):
    body = {**identity_request([1]), "reply_to": reply_to, "id": "bad-topic"}
    with_client_v311(client, lambda c: c.publish(
        device_topic("identity_fp32"), body))
    error = expect(client, f"perch/{LOCATION}/{DEVICE}/errors")
    assert_error(error, "identity_fp32", device_topic("identity_fp32"),
                 "topic", "InvalidArgument", "bad-topic")
    assert_still_answering(client)


def test_full_queue_answers_resource_exhausted(servers, broker, tmp_path):
    """A model whose queue is full answers ResourceExhausted over MQTT as
    REST answers 429: a client can tell "retry later" from "bad input"."""
    device = unique("busy")
    agent = start_agent(servers, broker, LOCATION, device, ["slow"],
                        state=tmp_path / "state")
    wait_status(broker, LOCATION, device, "online", 20)
    client = Client(broker.port).connect()
    client.replies = unique("replies/")
    client.subscribe(client.replies + "/#")
    # REST clients keep the slow model's queue (max_queue_size 2) full while
    # MQTT requests arrive, one at a time.
    stop = threading.Event()

    def load():
        while not stop.is_set():
            agent.infer("slow", {"inputs": [oip.json_input(
                "INPUT0", np.ones((1, 4), np.float32), "FP32")]})
    loaders = [threading.Thread(target=load) for _ in range(4)]
    for loader in loaders:
        loader.start()
    try:
        x = np.arange(4, dtype=np.float32).reshape(1, 4)
        refused = None
        for _ in range(50):
            answer = ask(client, device_topic("slow", device=device),
                         {"inputs": [oip.json_input("INPUT0", x, "FP32")]})
            body = assert_answer_shape(answer, device=device)
            if "error" not in body:
                assert np.array_equal(oip.outputs_by_name(body)["OUTPUT0"],
                                      x * 2), body
                continue
            refused = assert_error(answer, "slow",
                                   device_topic("slow", device=device),
                                   "max_queue_size", "ResourceExhausted",
                                   device=device)
            break
        assert refused is not None, \
            "no MQTT request found the queue full in 50 tries"
    finally:
        stop.set()
        for loader in loaders:
            loader.join()
        client.close()


def test_burst_of_bad_messages_then_good_ones(agent, client):
    before = metric(agent, "perch_mqtt_received_total")
    for i in range(50):
        client.publish(device_topic("identity_fp32"), b"{" * (i + 1),
                       wait=False)
    wait_metric(agent, "perch_mqtt_received_total", before + 50, 10)
    for i in range(3):
        assert_still_answering(client)
    agent.assert_alive()


# --- broker not there at start ------------------------------------------------------


def test_agent_started_before_its_broker(servers, tmp_path):
    broker = Broker(tmp_path / "late-broker")
    agent = start_agent(servers, broker, LOCATION, "early", MODELS,
                        state=tmp_path / "state")
    try:
        # REST serves at once, with MQTT not connected.
        response = agent.infer("identity_fp32", identity_request([3]))
        assert response.status_code == 200, response.text
        assert metric(agent, "perch_mqtt_connected") == 0
        time.sleep(2)  # a few failed attempts: the backoff has grown
        broker.start()
        assert wait_metric(agent, "perch_mqtt_connected", 1, 20) == 1, \
            "no connection within 20 s of the broker coming up"
        client = Client(broker.port).connect()
        client.replies = unique("replies/")
        client.subscribe(client.replies + "/#")
        answer = ask(client, device_topic("identity_fp32", device="early"),
                     identity_request([3]))
        client.close()
        assert_answer_shape(answer, device="early")
        assert oip.outputs_by_name(answer.json())["OUTPUT0"].tolist() == [[3]]
        assert metric(agent, "perch_mqtt_connects_total") == 1
    finally:
        agent.stop()
        broker.stop()
