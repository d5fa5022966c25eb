"""Flapping links: the agent reaches its broker through a fault proxy
(fault_proxy.py) that cuts the connection every few seconds (seeded; half
the cuts are resets), delays every byte by 500 ms, takes the link down for
a long stretch and makes it silent for another (a black hole), while an
event stream flows and clients use the agent over HTTP; and, through a
second proxy, between the agent and the hub while deployments change.
Afterwards: every input answered (0 acknowledged records lost), repeats
only under the same idempotency key (0 duplicates after dedupe), first
arrivals in order, the agent served locally throughout, it converged to the
hub's newest desired state each time the link came back, and it stops at
once even with a hub call lost in a black hole.

The issue asks for cuts every 5-60 s and a link down for minutes over 10
minutes: `make test` runs that (PERCH_FLAP_SECONDS=600, beside the rest of
the suite: scripts/flapping_links.sh), with perch's default keepalive and
backoff; `make flapping-links PERCH_FLAP_SECONDS=7200` is the 2-hour run,
with a 3-minute outage every half hour on the broker link and an
outage-and-redeploy cycle every 10 minutes on the hub link. Without
PERCH_FLAP_SECONDS, pytest runs a compressed schedule (cuts every 3-12 s,
a 15 s outage, an 18 s silence, 45 s of stream at 5 inputs/s, the agent's
MQTT keepalive and reconnect waits shortened to match) that has every kind
of fault the long runs have."""

import os
import subprocess
import threading
import time

import pytest

from fault_proxy import FaultProxy
from fleet_harness import (admin, create_location, fleet_agent,
                           make_scorer_repo, push_scorer, score, wait_scores)
from harness import PERCH_BIN, assert_stops_within, wait_for
from mqtt_harness import Broker, Client, metric, wait_online
from test_mqtt_durability import LOCATION, Stream, numbered, start_stream_agent

SEED = int(os.environ.get("PERCH_FLAP_SEED", "19"))
DURATION = float(os.environ.get("PERCH_FLAP_SECONDS", "45"))
LONG = DURATION >= 600
CUT_EVERY = (5, 60) if LONG else (3, 12)
OUTAGE = 180 if LONG else 15
OUTAGE_EVERY = 1800 if LONG else DURATION  # one outage in the short run
RATE = 5  # inputs per second: within what a 500 ms link with cuts carries

# The compressed run shortens the agent's MQTT keepalive and longest
# reconnect wait with it (a silent link is found dead within two keepalives,
# 10 s); the long runs keep perch's defaults (30 s and 15 s).
MQTT_FLAGS = () if LONG else ("--mqtt-keepalive", "5",
                              "--mqtt-reconnect-max", "2")
# A black hole on the broker link, longer than two keepalives: the agent
# must find the link dead and dial again before the silence ends.
SILENCE = 90 if LONG else 18
# One outage-and-redeploy cycle on the hub link per CYCLE: twelve in the
# 2-hour run, two in the 10-minute one, one in the compressed run.
CYCLE = 600 if DURATION >= 3600 else max(DURATION / 3, OUTAGE + 60)


@pytest.fixture
def broker(tmp_path):
    broker = Broker(tmp_path / "broker", persistence=True).start()
    yield broker
    broker.stop()


def test_stream_over_a_flapping_link(servers, broker, tmp_path):
    proxy = FaultProxy(broker.port, seed=SEED, latency=0.5,
                       cut_every=CUT_EVERY).start()
    stream = Stream(tmp_path, broker)
    agent = start_stream_agent(servers, f"mqtt://{proxy.url}", stream,
                               tmp_path, extra=MQTT_FLAGS)
    wait_online(stream.subscriber, LOCATION, "d1", timeout=30)

    # Local clients keep using the agent, whatever the link does.
    local_failures = []
    local_answers = [0]
    stop_local = threading.Event()

    def use_locally():
        while not stop_local.wait(0.5):
            try:
                response = agent.infer("identity_fp32", numbered(7))
                if response.status_code == 200:
                    local_answers[0] += 1
                else:
                    local_failures.append(response.status_code)
            except Exception as error:  # noqa: BLE001: any failure counts
                local_failures.append(repr(error))
    local = threading.Thread(target=use_locally, daemon=True)
    local.start()

    count = int(DURATION * RATE)
    publisher = Client(broker.port, max_inflight=1000).connect()
    start = time.monotonic()
    next_outage = min(20.0, DURATION / 3)
    outages = 0
    # Half of the silence falls after the last input, where the test waits
    # for the agent to find it: a silence that ended while inputs were still
    # going out would have been found (and healed) unseen.
    silence_at = DURATION - SILENCE / 2
    silenced_at = None
    for i in range(count):
        due = start + i / RATE
        time.sleep(max(0.0, due - time.monotonic()))
        if time.monotonic() - start >= next_outage:
            proxy.down(OUTAGE)
            outages += 1
            next_outage += OUTAGE_EVERY
        if silenced_at is None and time.monotonic() - start >= silence_at:
            proxy.silence(SILENCE)
            silenced_at = time.monotonic()
        publisher.publish(stream.input_topic, numbered(i), wait=False)
    publisher.close()

    # Nothing told the agent the link went silent: its keepalive must, and
    # before the resets that end the silence do (hence the second's margin).
    silence_ends = silenced_at + SILENCE
    wait_for(lambda: metric(agent, "perch_mqtt_connected") == 0,
             silence_ends - 1 - time.monotonic(),
             what="the agent to find the silent link dead before the "
                  f"{SILENCE} s black hole ended")
    noticed = time.monotonic() - silenced_at

    # The stream is out; the agent catches up once the link lets it.
    stream.receive(count, timeout=max(120, DURATION / 2))
    stop_local.set()
    local.join(5)

    def state():
        return (f"{len({m.json()['outputs'][0]['data'][0] for m in stream.answers})}"
                f" of {count} answered; outbox "
                f"{metric(agent, 'perch_queue_depth', 'outbox'):.0f}, inbox "
                f"{metric(agent, 'perch_queue_depth', 'mqtt-inbox'):.0f}, "
                f"received {metric(agent, 'perch_mqtt_received_total'):.0f}, "
                f"delivered {metric(agent, 'perch_mqtt_delivered_total'):.0f},"
                f" connects {metric(agent, 'perch_mqtt_connects_total'):.0f};"
                f" proxy: {proxy.cuts} cuts, {proxy.connections} connections"
                f", {proxy.refused} refused\n{agent.logs()[-3000:]}")
    wait_for(lambda: metric(agent, "perch_queue_depth", "outbox") == 0, 30,
             what=lambda: "the outbox to empty: " + state())
    proxy.close()
    stream.close()
    repeats = stream.check(count)
    print(f"{count} inputs over {DURATION:.0f} s: {proxy.cuts} cuts "
          f"({proxy.resets} resets), {outages} outages of {OUTAGE} s, "
          f"{proxy.connections} connections, {proxy.refused} refused; "
          f"{repeats} repeats (same key); {local_answers[0]} local answers; "
          f"a silent link found dead after {noticed:.1f} s")
    assert proxy.cuts >= 3 and outages >= 1, "the link hardly flapped"
    assert not local_failures, f"local requests failed: {local_failures[:5]}"
    assert local_answers[0] >= DURATION, "the agent stopped serving locally"
    assert metric(agent, "perch_mqtt_connects_total") >= 3
    assert metric(agent, "perch_queue_depth", "mqtt-inbox") == 0


def test_agent_converges_to_the_hub_over_a_flapping_link(hubs, tmp_path):
    """The agent reaches the hub (API and registry) through the fault proxy:
    it serves throughout, and after each long outage during which the
    deployment changed twice it goes straight to the newest state. The
    cycles rotate over the scorer's three versions, one every CYCLE."""
    hub = hubs.start()
    proxy = FaultProxy(hub.port, seed=SEED + 1, latency=0.5).start()
    repo = make_scorer_repo(tmp_path / "models")
    # Pushed through the proxy (the references name it, so the agent pulls
    # through it) before it flaps: `perch push` is a command a user runs
    # again, not something that retries.
    references = {v: push_scorer(hub, repo, proxy.url, v) for v in (1, 2, 3)}
    token = create_location(hub, "plant-a")
    # The link flaps from the agent's first request on: an answer to its
    # enrolment lost in a cut is answered again on the retry (its
    # enrolment key; test_enrolment.py loses one on purpose).
    proxy.start_cuts(CUT_EVERY)
    agent = fleet_agent(tmp_path, f"http://{proxy.url}", token, "a1",
                        tmp_path / "state-a1").start()
    try:
        admin(hub, "deploy", references[1], "--name", "scorer")
        wait_scores([agent], 11.0, timeout=60)

        current = 1
        cycles = max(1, int(DURATION // CYCLE))
        for cycle in range(cycles):
            cycle_ends = time.monotonic() + CYCLE
            skipped = current % 3 + 1
            newest = skipped % 3 + 1
            logged = len(agent.whole_log())
            proxy.down(OUTAGE)
            admin(hub, "deploy", references[skipped], "--name", "scorer")
            admin(hub, "deploy", references[newest], "--name", "scorer")
            outage_ends = time.monotonic() + OUTAGE
            while time.monotonic() < outage_ends:
                assert score(agent) == 10.0 + current, \
                    f"cycle {cycle}: the agent stopped serving offline"
                time.sleep(0.5)

            wait_scores([agent], 10.0 + newest, timeout=90)
            assert references[skipped] not in agent.whole_log()[logged:], \
                agent.logs()[-3000:]

            def reported():
                return f"scorer:{newest}" in admin(hub, "status").stdout
            wait_for(reported, 60, what=lambda: f"cycle {cycle}: the hub to "
                     f"see scorer:{newest}:\n" + admin(hub, "status").stdout)
            current = newest
            # Until the next cycle the link keeps flapping, and the agent
            # keeps serving and reporting through it.
            while cycle < cycles - 1 and time.monotonic() < cycle_ends:
                assert score(agent) == 10.0 + current, \
                    f"cycle {cycle}: the agent stopped serving on a flapping link"
                time.sleep(0.5)
        print(f"hub link: {cycles} outage cycles, {proxy.cuts} cuts "
              f"({proxy.resets} resets), {proxy.connections} connections, "
              f"{proxy.refused} refused")
        assert proxy.cuts >= cycles, "the hub link hardly flapped"

        # A black hole: the agent's next hub call waits for an answer that
        # never comes (its timeout is 10 s). Stopping must not wait it out.
        proxy.silence(60)
        wait_for(lambda: proxy.swallowed > 0, 10,
                 what="the agent to call the hub into the black hole")
        assert_stops_within(agent, 4, "during a hub call on a silent link")
    finally:
        stopped_at = time.monotonic()
        status = agent.stop()
        proxy.close()
        assert status == 0, (f"perch exited {status} on SIGTERM after "
                             f"{time.monotonic() - stopped_at:.1f} s\n"
                             + agent.logs()[-4000:])


@pytest.mark.parametrize("args,message", [
    (["--mqtt-keepalive", "4"], "--mqtt-keepalive"),
    (["--mqtt-keepalive", "70000"], "--mqtt-keepalive"),
    (["--mqtt-reconnect-max", "0.1"], "--mqtt-reconnect-max"),
    (["--mqtt-reconnect-max", "soon"], "--mqtt-reconnect-max"),
], ids=["keepalive-short", "keepalive-long", "reconnect-short", "reconnect-word"])
def test_the_link_flags_refuse_what_the_link_cannot_use(tmp_path, args, message):
    repo = tmp_path / "repo"
    repo.mkdir()
    result = subprocess.run(
        [PERCH_BIN, "serve", "--check-config", "--repo", repo, "--state",
         tmp_path / "state", "--mqtt", "mqtt://127.0.0.1:1883", *args],
        capture_output=True, text=True, timeout=10)
    assert result.returncode != 0, result.stdout + result.stderr
    assert message in result.stdout + result.stderr, result.stderr
    assert "configuration is valid" not in result.stdout + result.stderr
