"""Prometheus metrics at /metrics move by exactly the requests sent."""

import math
import re

import numpy as np
import pytest

import oip

REQUESTS = "perch_inference_requests_total"
FAILURES = "perch_inference_failures_total"
HISTOGRAMS = ("perch_inference_queue_duration_seconds",
              "perch_inference_compute_duration_seconds")

SAMPLE_LINE = re.compile(
    r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})?"
    r"\s+(?P<value>\S+)(?:\s+\d+)?$")
LABEL = re.compile(
    r'(?P<key>[a-zA-Z_][a-zA-Z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


@pytest.fixture(scope="module")
def server(module_servers):
    return module_servers.start(["add_sub", "multi_version"])


class Scrape:
    """One parse of the Prometheus text exposition format."""

    def __init__(self, text):
        self.types = {}
        self.samples = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, kind = line.split(maxsplit=3)
                self.types[name] = kind
            elif line and not line.startswith("#"):
                match = SAMPLE_LINE.match(line)
                assert match, f"not a Prometheus sample line: {line!r}"
                labels = frozenset(
                    (m["key"], m["value"])
                    for m in LABEL.finditer(match["labels"] or ""))
                self.samples[match["name"], labels] = float(match["value"])

    def value(self, name, **labels):
        """A sample's value; 0 for a series not exported yet."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def buckets(self, histogram, **labels):
        """[(upper bound, cumulative count)] of a histogram, by bound."""
        found = []
        for (name, sample_labels), count in self.samples.items():
            keyed = dict(sample_labels)
            bound = keyed.pop("le", None)
            if name == histogram + "_bucket" and keyed == labels:
                found.append((float(bound), count))
        return sorted(found)


def scrape(server):
    response = server.get("/metrics")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return Scrape(response.text)


def add_sub_request():
    a = np.ones((2, 4), dtype=np.float32)
    return {"inputs": [oip.json_input("INPUT0", a, "FP32"),
                       oip.json_input("INPUT1", a, "FP32")]}


def infer_add_sub(server):
    response = server.infer("add_sub", add_sub_request())
    assert response.status_code == 200, response.text


def invalid_add_sub_requests():
    """Requests add_sub refuses, each for a different kind of mistake."""
    short_data = add_sub_request()
    short_data["inputs"][1]["data"].pop()
    missing_input = add_sub_request()
    missing_input["inputs"].pop()
    return [short_data, missing_input]


def test_metric_families_are_declared(server):
    infer_add_sub(server)
    types = scrape(server).types
    for counter in (REQUESTS, FAILURES):
        # Exposition format 0.0.4 names a counter family with its _total
        # suffix, OpenMetrics without.
        family = counter.removesuffix("_total")
        assert types.get(counter, types.get(family)) == "counter", counter
    for histogram in HISTOGRAMS:
        assert types[histogram] == "histogram"


def test_successes_counted(server):
    labels = {"model": "add_sub", "version": "1"}
    before = scrape(server)
    for _ in range(3):
        infer_add_sub(server)
    after = scrape(server)

    assert after.value(REQUESTS, **labels) - before.value(REQUESTS, **labels) \
        == 3
    assert after.value(FAILURES, **labels) == before.value(FAILURES, **labels)
    for histogram in HISTOGRAMS:
        count = after.value(histogram + "_count", **labels)
        assert count - before.value(histogram + "_count", **labels) == 3
        assert after.value(histogram + "_sum", **labels) \
            >= before.value(histogram + "_sum", **labels)
        buckets = after.buckets(histogram, **labels)
        assert buckets[-1] == (math.inf, count)
        counts = [c for _, c in buckets]
        assert counts == sorted(counts), "buckets are not cumulative"


def test_failures_counted(server):
    # requests_total counts every request that names a served model version,
    # failed ones included; failures_total counts the failed ones.
    labels = {"model": "add_sub", "version": "1"}
    bad_requests = invalid_add_sub_requests()
    before = scrape(server)
    for request in bad_requests:
        response = server.infer("add_sub", request)
        assert response.status_code == 400, response.text
    after = scrape(server)
    for counter in (FAILURES, REQUESTS):
        assert after.value(counter, **labels) \
            - before.value(counter, **labels) == len(bad_requests), counter


def test_versions_counted_apart(server):
    request = {"inputs": [oip.json_input(
        "INPUT0", np.zeros(2, dtype=np.float32), "FP32")]}
    sent = {"1": 1, "2": 2, "3": 0}
    before = scrape(server)
    for version, times in sent.items():
        for _ in range(times):
            assert server.infer("multi_version", request,
                                version).status_code == 200
    after = scrape(server)
    for version, times in sent.items():
        labels = {"model": "multi_version", "version": version}
        assert after.value(REQUESTS, **labels) \
            - before.value(REQUESTS, **labels) == times, version


def test_unknown_model_makes_no_series(server):
    # Labels from unchecked request paths would let clients grow the
    # metrics without bound.
    server.infer("made_up_model", {"inputs": []})
    assert "made_up_model" not in server.get("/metrics").text
