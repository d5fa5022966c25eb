"""A mosquitto broker, MQTT clients and perch agents for the MQTT tests.

The broker is the real mosquitto (/usr/sbin/mosquitto) on a free loopback
port with a per-test configuration file; the clients are paho-mqtt 1.6.1
(MQTT 5 or 3.1.1); the agents are `perch serve --mqtt` started through the
ServerPool of harness.py, so the same clean-exit checks apply to them.
"""

import getpass
import json
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from harness import WaitTimeout, free_port, wait_for

MOSQUITTO = "/usr/sbin/mosquitto"

# Every wait is bounded: a silent agent fails the test, not the run.
CONNECT_TIMEOUT = 10
ANSWER_TIMEOUT = 5
BROKER_TIMEOUT = 10

V5 = paho.MQTTv5
V311 = paho.MQTTv311


def unique(prefix):
    """A name no other test uses, for topics, client ids and devices."""
    return f"{prefix}{uuid.uuid4().hex[:10]}"


class Broker:
    """One mosquitto on a loopback port, restartable on the same port.

    persistence keeps retained messages, sessions and their queued QoS 1
    messages across a restart (mosquitto writes them when it stops)."""

    def __init__(self, workdir, persistence=False, port=None, extra=()):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.config = self.workdir / f"mosquitto-{self.port}.conf"
        self.log = self.workdir / f"mosquitto-{self.port}.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            "allow_anonymous true",
            # Run as root, mosquitto would switch to the mosquitto user,
            # who cannot write the log and persistence here (no effect for
            # other users).
            f"user {getpass.getuser()}",
            # The default (1000) would silently drop QoS 1 messages queued
            # for a slow or absent subscriber: the tests count every one.
            "max_queued_messages 0",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"log_dest file {self.log}",
            "log_type error", "log_type warning", "log_type notice",
            "log_type information",
            *extra,
        ]
        self.config.write_text("\n".join(lines) + "\n")
        self.process = None

    def start(self):
        self.process = subprocess.Popen(
            [MOSQUITTO, "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for(self._listening_or_exited, BROKER_TIMEOUT, 0.02)
            started = self.process.poll() is None
        except WaitTimeout:
            started = False
        if not started:
            self.kill()
            pytest.fail(f"mosquitto did not start on port {self.port}\n"
                        + self.logs())
        return self

    def _listening_or_exited(self):
        if self.process.poll() is not None:
            return True
        with socket.socket() as probe:
            probe.settimeout(0.5)
            return probe.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self, sig=signal.SIGTERM):
        """Stops the broker (SIGTERM: a clean exit that saves persistence)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(BROKER_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode if self.process else None

    def kill(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def running(self):
        return self.process is not None and self.process.poll() is None

    def logs(self):
        text = self.log.read_text(errors="replace") if self.log.exists() \
            else ""
        return f"--- mosquitto log (last 3000 chars) ---\n{text[-3000:]}"


class Message:
    """What a client received: topic, payload and (MQTT 5) properties."""

    def __init__(self, message):
        self.topic = message.topic
        self.payload = message.payload
        self.qos = message.qos
        self.retain = message.retain
        props = getattr(message, "properties", None)
        self.correlation = getattr(props, "CorrelationData", None)
        self.content_type = getattr(props, "ContentType", None)
        self.user_properties = list(getattr(props, "UserProperty", []) or [])
        self.received = time.monotonic()

    def json(self):
        return json.loads(self.payload)

    def user_property(self, name):
        values = [v for k, v in self.user_properties if k == name]
        return values[0] if values else None

    def __repr__(self):
        return f"Message({self.topic!r}, {self.payload[:300]!r})"


class Client:
    """A paho client on its own network thread; what it receives is queued
    in `messages`. clean_start=False with a session expiry gives a
    persistent session: the broker keeps its subscriptions and queues its
    QoS 1 messages while it is away, and paho reconnects by itself."""

    def __init__(self, port, client_id=None, protocol=V5, clean_start=True,
                 session_expiry=0, max_inflight=20):
        self.port = port
        self.protocol = protocol
        self.client_id = client_id or unique("test-")
        self.messages = queue.Queue()
        self._connected = threading.Event()
        self._acks = {}
        self._acks_lock = threading.Lock()
        if protocol == V5:
            self._paho = paho.Client(client_id=self.client_id, protocol=V5)
        else:
            self._paho = paho.Client(client_id=self.client_id,
                                     clean_session=clean_start,
                                     protocol=protocol)
        self._paho.max_inflight_messages_set(max_inflight)
        self._paho.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self._paho.on_connect = self._on_connect
        self._paho.on_disconnect = self._on_disconnect
        self._paho.on_message = self._on_message
        self._paho.on_subscribe = self._on_subscribe
        self._clean_start = clean_start
        self._session_expiry = session_expiry

    def connect(self, timeout=CONNECT_TIMEOUT):
        if self.protocol == V5:
            properties = Properties(PacketTypes.CONNECT)
            if self._session_expiry:
                properties.SessionExpiryInterval = self._session_expiry
            self._paho.connect("127.0.0.1", self.port, keepalive=30,
                               clean_start=self._clean_start,
                               properties=properties)
        else:
            self._paho.connect("127.0.0.1", self.port, keepalive=30)
        # Without it, Nagle's algorithm holds a small packet sent right
        # after another until the broker's delayed ACK (40 ms) comes.
        self._paho.socket().setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY,
                                       1)
        self._paho.loop_start()
        if not self._connected.wait(timeout):
            self.close()
            pytest.fail(f"client {self.client_id} could not connect to the "
                        f"broker on port {self.port}")
        return self

    def close(self):
        self._paho.disconnect()
        self._paho.loop_stop()

    def connected(self):
        return self._connected.is_set()

    def wait_connected(self, timeout=CONNECT_TIMEOUT):
        return self._connected.wait(timeout)

    def _on_connect(self, client, userdata, flags, rc, properties=None):
        if rc == 0:
            self._connected.set()

    def _on_disconnect(self, client, userdata, rc, properties=None):
        self._connected.clear()

    def _on_message(self, client, userdata, message):
        self.messages.put(Message(message))

    def _on_subscribe(self, client, userdata, mid, *args):
        with self._acks_lock:
            self._acks.setdefault(mid, threading.Event()).set()

    def subscribe(self, topic, qos=1, timeout=ANSWER_TIMEOUT):
        """Subscribes and waits for the broker's SUBACK."""
        result, mid = self._paho.subscribe(topic, qos)
        assert result == paho.MQTT_ERR_SUCCESS, paho.error_string(result)
        with self._acks_lock:
            acked = self._acks.setdefault(mid, threading.Event())
        assert acked.wait(timeout), f"no SUBACK for {topic}"
        return self

    def publish(self, topic, payload, qos=1, retain=False, response_topic=None,
                correlation=None, wait=True, timeout=ANSWER_TIMEOUT):
        """Publishes (a dict as JSON); with wait, until the broker has it."""
        if isinstance(payload, (dict, list)):
            payload = json.dumps(payload)
        properties = None
        if response_topic is not None or correlation is not None:
            assert self.protocol == V5, "properties need MQTT 5"
            properties = Properties(PacketTypes.PUBLISH)
            if response_topic is not None:
                properties.ResponseTopic = response_topic
            if correlation is not None:
                properties.CorrelationData = correlation
        info = self._paho.publish(topic, payload, qos=qos, retain=retain,
                                  properties=properties)
        if wait and qos > 0:
            info.wait_for_publish(timeout)
            assert info.is_published(), f"the broker did not take {topic}"
        return info

    def next(self, timeout=ANSWER_TIMEOUT):
        """The next message received, or None after timeout seconds."""
        try:
            return self.messages.get(timeout=max(0, timeout))
        except queue.Empty:
            return None

    def collect(self, count, timeout=ANSWER_TIMEOUT, idle=None):
        """Up to count messages, within timeout (or until idle seconds pass
        without one)."""
        received = []
        deadline = time.monotonic() + timeout
        while len(received) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            message = self.next(min(left, idle) if idle else left)
            if message is None:
                break
            received.append(message)
        return received

    def drain(self, quiet=0.3):
        """Everything received until quiet seconds pass without a message."""
        return self.collect(10**9, timeout=60, idle=quiet)


def agent_args(broker_url, location, device, state, *extra):
    return ["--mqtt", broker_url, "--location", location, "--device", device,
            "--state", state, *extra]


def start_agent(servers, broker, location, device, models=(), state=None,
                repo=None, extra=()):
    """`perch serve --mqtt` (through ServerPool servers) for broker, a Broker
    or a URL, keeping what must survive a restart in the folder state."""
    assert state is not None, "an agent needs its --state folder"
    url = broker.url if isinstance(broker, Broker) else broker
    agent = servers.start(models, repo=repo, args=agent_args(
        url, location, device, state, *extra))
    agent.state = state
    agent.location = location
    agent.device = device
    return agent


SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)$')


def metrics(agent):
    """{name or name{labels}: value} of the agent's /metrics."""
    values = {}
    for line in agent.get("/metrics").text.splitlines():
        match = SAMPLE.match(line)
        if match:
            values[match[1] + (match[2] or "")] = float(match[3])
    return values


def metric(agent, name, queue_name=None):
    """One MQTT or queue metric; 0 when not exported yet."""
    key = name if queue_name is None else f'{name}{{queue="{queue_name}"}}'
    return metrics(agent).get(key, 0.0)


def wait_metric(agent, name, at_least, timeout, queue_name=None):
    """Waits until metric >= at_least and returns its value then; fails the
    test (WaitTimeout) when it stays below for timeout seconds."""
    last = [0.0]

    def reached():
        last[0] = metric(agent, name, queue_name)
        return last[0] >= at_least
    label = name if queue_name is None else f"{name}{{queue={queue_name}}}"
    wait_for(reached, timeout, 0.05, what=lambda: (
        f"{label} to reach {at_least}; it is {last[0]}"))
    return last[0]


def status_topic(location, device, prefix="perch"):
    return f"{prefix}/{location}/{device}/status"


def wait_online(client, location, device, timeout=CONNECT_TIMEOUT * 2):
    """Waits for the agent's retained status to say online (it subscribes
    before it says so, so it is then ready for requests)."""
    topic = status_topic(location, device)
    watcher = Client(client.port).connect()
    try:
        watcher.subscribe(topic)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = watcher.next(deadline - time.monotonic())
            if message and message.topic == topic and \
                    message.json().get("state") == "online":
                return message.json()
        pytest.fail(f"{location}/{device} did not say online in {timeout} s")
    finally:
        watcher.close()


class PublishFilter:
    """A TCP proxy between an agent and the broker that can lose what the
    agent publishes (PUBLISH packets) while everything else passes: the
    agent stays connected and receives requests, the broker acknowledges
    them, but no answer reaches the broker and none is acknowledged. So the
    answers pile up in the agent's outbox, as on a lossy uplink. The lost
    packets are kept in lost_packets.

    cut() closes the connections (the agent reconnects through the proxy)."""

    PUBLISH = 3

    def __init__(self, broker_port):
        self.broker_port = broker_port
        self.port = free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.lose_publishes = False
        self.lost_packets = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", self.port))
        self._listener.listen(8)
        self._sockets = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._closed:
            try:
                downstream, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(
                    ("127.0.0.1", self.broker_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                downstream.close()
                continue
            with self._lock:
                self._sockets += [downstream, upstream]
            threading.Thread(target=self._pipe, args=(upstream, downstream),
                             daemon=True).start()
            threading.Thread(target=self._filter, args=(downstream, upstream),
                             daemon=True).start()

    @staticmethod
    def _pipe(source, sink):
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _filter(self, source, sink):
        """Forwards MQTT packets from source to sink, packet by packet."""
        buffer = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                buffer += data
                out = []
                while True:
                    packet_length = self._packet_length(buffer)
                    if packet_length is None or len(buffer) < packet_length:
                        break
                    packet, buffer = buffer[:packet_length], \
                        buffer[packet_length:]
                    if self.lose_publishes and packet[0] >> 4 == self.PUBLISH:
                        self.lost_packets.append(packet)
                        continue
                    out.append(packet)
                if out:
                    sink.sendall(b"".join(out))
        except OSError:
            pass
        for end in (source, sink):
            try:
                end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    @staticmethod
    def _packet_length(buffer):
        """Length of the first whole MQTT packet's bytes, None if unknown."""
        multiplier, remaining = 1, 0
        for index in range(1, 5):
            if index >= len(buffer):
                return None
            byte = buffer[index]
            remaining += (byte & 0x7F) * multiplier
            multiplier *= 128
            if not byte & 0x80:
                return 1 + index + remaining
        raise ValueError("malformed MQTT remaining length")

    def cut(self):
        """Closes every proxied connection."""
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()

    def close(self):
        self._closed = True
        self._listener.close()
        self.cut()
