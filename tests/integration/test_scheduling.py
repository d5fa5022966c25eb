"""Scheduling: bounded per-model queues, dynamic batching, request timeouts
and a graceful shutdown that finishes the requests in flight.

The slow test model runs about 80 ms per inference, one at a time, with a
queue of two; the row-wise models answer row by row, so that a merged batch
split back wrongly shows in the numbers."""

import json
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest

import grpc_oip
import oip
from grpc_oip import (connect, infer_request, parameters, raw_input,
                      response_arrays, typed_input)
from harness import REQUEST_TIMEOUT, copy_models, wait_for
from test_metrics import REQUESTS, scrape

# The session's generated stubs, a fixture of grpc_oip.
grpc_stubs = grpc_oip.grpc_stubs

BATCH_SIZE = "perch_inference_batch_size"
SLOW_MAX_QUEUE_SIZE = 2
MODELS = ["slow", "dynamic_batched", "preferred_batched", "idle_batched", "row_wise",
          "add_sub"]

# dynamic_batched waits 20 ms for company, even when idle (a tiny model
# run from Python threads would otherwise seldom have a batch running);
# preferred_batched 1 s even when idle, unless two rows make its preferred
# batch; idle_batched 1 s, only while a batch of it runs.
PREFERRED_DELAY_S = 1.0


@pytest.fixture(scope="module")
def server(module_servers):
    # Two workers whatever the core count: slow busies one, the other
    # serves the other models.
    return module_servers.start(MODELS, args=["--workers", 2])


@pytest.fixture(scope="module")
def client(grpc_stubs, server):
    client = connect(grpc_stubs, server)
    yield client
    client.close()


def concurrently(function, arguments):
    """[function(a) for a in arguments], all started at the same moment."""
    arguments = list(arguments)
    start = threading.Barrier(len(arguments))

    def run(argument):
        start.wait(timeout=REQUEST_TIMEOUT)
        return function(argument)

    with ThreadPoolExecutor(max_workers=len(arguments)) as pool:
        return list(pool.map(run, arguments))


def fp32_request(x, **fields):
    return {"inputs": [oip.json_input("INPUT0", x, "FP32")], **fields}


def distinct_rows(seed, rows):
    """Integer-valued rows unique to seed: exact in FP32 through x * 2 + 1
    and row sums, and never equal to another request's."""
    return (np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
            + np.float32(1000 * seed))


def row_wise_expectation(x):
    return {"OUTPUT0": x * 2 + 1, "OUTPUT1": x.sum(axis=1, keepdims=True)}


def batch_sizes(server, model):
    """(count, sum, {bound: cumulative count}) of the model's batch sizes."""
    metrics = scrape(server)
    labels = {"model": model, "version": "1"}
    return (metrics.value(BATCH_SIZE + "_count", **labels),
            metrics.value(BATCH_SIZE + "_sum", **labels),
            dict(metrics.buckets(BATCH_SIZE, **labels)))


def assert_slow_still_serves(server):
    x = distinct_rows(99, 1)
    response = server.infer("slow", fp32_request(x))
    assert response.status_code == 200, response.text
    assert np.array_equal(oip.outputs_by_name(response.json())["OUTPUT0"],
                          x * 2)


# Bounded queues

def test_queue_full_is_refused_with_429(server):
    def infer(seed):
        x = distinct_rows(seed, 1)
        return x, server.infer("slow", fp32_request(x))

    results = concurrently(infer, range(12))
    statuses = sorted(response.status_code for _, response in results)
    assert set(statuses) <= {200, 429}, statuses
    # The first max_queue_size to arrive always find room.
    assert statuses.count(200) >= SLOW_MAX_QUEUE_SIZE, statuses
    assert statuses.count(429) >= 1, statuses
    for x, response in results:
        if response.status_code == 429:
            error = response.json()["error"]
            assert "slow" in error and "max_queue_size" in error, error
        else:
            outputs = oip.outputs_by_name(response.json())
            assert np.array_equal(outputs["OUTPUT0"], x * 2)
    assert_slow_still_serves(server)


def test_queue_full_is_resource_exhausted_over_grpc(server, client):
    pb = client.pb

    def infer(seed):
        x = distinct_rows(seed, 1)
        try:
            response = client.infer(infer_request(
                pb, "slow", [typed_input(pb, "INPUT0", x, "FP32")]))
        except grpc.RpcError as error:
            return x, error
        return x, response

    results = concurrently(infer, range(10))
    refused = [r for _, r in results if isinstance(r, grpc.RpcError)]
    assert refused, "no request was refused"
    assert len(results) - len(refused) >= SLOW_MAX_QUEUE_SIZE
    for error in refused:
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (
            error.code(), error.details())
        assert "slow" in error.details()
        assert "max_queue_size" in error.details()
    for x, result in results:
        if not isinstance(result, grpc.RpcError):
            arrays, _ = response_arrays(result)
            assert np.array_equal(arrays["OUTPUT0"], x * 2)
    assert_slow_still_serves(server)


def test_busy_model_does_not_hold_up_another(server):
    # slow runs one request at a time on one of the two workers; add_sub,
    # sent while slow is busy, must not wait for it.
    a = np.ones((1, 4), np.float32)
    add_sub_request = {"inputs": [oip.json_input("INPUT0", a, "FP32"),
                                  oip.json_input("INPUT1", a, "FP32")]}
    labels = {"model": "slow", "version": "1"}
    sent = scrape(server).value(REQUESTS, **labels)

    def infer_slow(seed):
        response = server.infer("slow", fp32_request(distinct_rows(seed, 1)))
        return response.status_code, time.monotonic()

    with ThreadPoolExecutor(max_workers=3) as pool:
        slow = [pool.submit(infer_slow, seed) for seed in range(3)]
        assert wait_for(lambda: scrape(server).value(REQUESTS, **labels)
                        > sent, REQUEST_TIMEOUT, interval=0.005)
        response = server.infer("add_sub", add_sub_request)
        answered = time.monotonic()
        slow_results = [future.result(timeout=REQUEST_TIMEOUT)
                        for future in slow]
    assert response.status_code == 200, response.text
    assert {status for status, _ in slow_results} <= {200, 429}
    # Before even the first slow request, which was running when it came.
    assert answered < min(at for status, at in slow_results if status == 200)
    assert_slow_still_serves(server)


# Dynamic batching

def infer_row_wise(server, model, seed, outputs=None):
    """(x, outputs) of one request of seed % 3 + 1 rows."""
    x = distinct_rows(seed, seed % 3 + 1)
    request = fp32_request(x, id=f"request-{seed}")
    if outputs:
        request["outputs"] = [{"name": name} for name in outputs]
    response = server.infer(model, request)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == f"request-{seed}"
    return x, oip.outputs_by_name(body)


def assert_row_wise_answers(results, wanted=("OUTPUT0", "OUTPUT1")):
    for x, outputs in results:
        expected = row_wise_expectation(x)
        assert sorted(outputs) == sorted(wanted)
        for name in wanted:
            assert oip.same_bits(outputs[name], expected[name]), (
                name, x, outputs[name])


def test_dynamic_batching_merges_and_splits_exactly(server):
    count_before, sum_before, _ = batch_sizes(server, "dynamic_batched")
    requests = 24
    results = concurrently(
        lambda seed: infer_row_wise(server, "dynamic_batched", seed),
        range(requests))
    assert_row_wise_answers(results)
    count, total, _ = batch_sizes(server, "dynamic_batched")
    # Each request ran in exactly one batch; fewer batches than requests
    # means that some batches held more than one.
    assert total - sum_before == requests
    assert count - count_before < requests, (
        f"{count - count_before} batches for {requests} requests")


def test_dynamic_batching_keeps_output_selections_apart(server):
    # Requests asking for different outputs may not share a batch, or they
    # would get each other's selection.
    selections = [None, ["OUTPUT1"], ["OUTPUT0"], ["OUTPUT1", "OUTPUT0"]]
    results = concurrently(
        lambda seed: (selections[seed % 4], infer_row_wise(
            server, "dynamic_batched", seed, selections[seed % 4])),
        range(16))
    for selection, (x, outputs) in results:
        assert_row_wise_answers([(x, outputs)],
                                selection or ("OUTPUT0", "OUTPUT1"))


def test_dynamic_batching_over_grpc_and_rest_together(server, client):
    # JSON, binary, typed and raw requests share batches; each answer comes
    # back in its own request's encoding.
    pb = client.pb

    def infer(seed):
        x = distinct_rows(seed, seed % 3 + 1)
        kind = seed % 4
        if kind == 0:
            return infer_row_wise(server, "dynamic_batched", seed)
        if kind == 1:
            description, raw = oip.binary_input("INPUT0", x, "FP32")
            body, headers = oip.binary_body({
                "inputs": [description],
                "parameters": {"binary_data_output": True}}, [raw])
            response = server.infer("dynamic_batched", body, headers=headers)
            assert response.status_code == 200, response.text
            return x, oip.outputs_by_name(oip.decode_response(response))
        if kind == 2:
            inputs, raws = [typed_input(pb, "INPUT0", x, "FP32")], []
        else:
            description, raw = raw_input(pb, "INPUT0", x, "FP32")
            inputs, raws = [description], [raw]
        response = client.infer(infer_request(pb, "dynamic_batched", inputs,
                                              raws, id=str(seed)))
        assert response.id == str(seed)
        arrays, encoding = response_arrays(response)
        assert encoding == ("typed" if kind == 2 else "raw")
        return x, arrays

    assert_row_wise_answers(concurrently(infer, range(16)))


def test_dynamic_batching_with_empty_requests(server):
    # Requests of no rows may join a batch; they get no rows back.
    def infer(seed):
        x = distinct_rows(seed, seed % 4)
        response = server.infer("dynamic_batched", fp32_request(x))
        assert response.status_code == 200, response.text
        return x, oip.outputs_by_name(response.json())

    assert_row_wise_answers(concurrently(infer, range(16)))


def test_batch_size_histogram_buckets(server):
    infer_row_wise(server, "dynamic_batched", 0)
    metrics = scrape(server)
    assert metrics.types[BATCH_SIZE] == "histogram"
    bounds = [bound for bound, _ in metrics.buckets(
        BATCH_SIZE, model="dynamic_batched", version="1")]
    assert bounds[:4] == [1, 2, 4, 8]
    assert bounds[-1] == float("inf")


def test_no_batching_without_dynamic_batching(server):
    before_count, before_sum, before_buckets = batch_sizes(server, "row_wise")
    requests = 16
    results = concurrently(
        lambda seed: infer_row_wise(server, "row_wise", seed),
        range(requests))
    assert_row_wise_answers(results)
    count, total, buckets = batch_sizes(server, "row_wise")
    assert count - before_count == requests
    assert total - before_sum == requests
    assert buckets[1.0] - before_buckets.get(1.0, 0) == requests


def test_preferred_batch_size_dispatches_without_waiting(server):
    before_count, before_sum, _ = batch_sizes(server, "preferred_batched")

    def infer(seed):
        started = time.monotonic()
        result = infer_row_wise(server, "preferred_batched", seed * 3)
        return result, time.monotonic() - started

    results = concurrently(infer, range(2))  # one row each
    assert_row_wise_answers([result for result, _ in results])
    for _, seconds in results:
        assert seconds < PREFERRED_DELAY_S * 0.8, seconds
    count, total, _ = batch_sizes(server, "preferred_batched")
    assert (count - before_count, total - before_sum) == (1, 2)


def test_lone_request_waits_for_company_at_most_the_delay(server):
    started = time.monotonic()
    assert_row_wise_answers([infer_row_wise(server, "preferred_batched", 0)])
    seconds = time.monotonic() - started
    assert PREFERRED_DELAY_S * 0.9 <= seconds < PREFERRED_DELAY_S + 2, seconds


def test_idle_model_runs_a_lone_request_without_waiting_for_company(server):
    before_count, before_sum, _ = batch_sizes(server, "idle_batched")
    started = time.monotonic()
    assert_row_wise_answers([infer_row_wise(server, "idle_batched", 0)])
    seconds = time.monotonic() - started
    assert seconds < PREFERRED_DELAY_S / 2, seconds
    count, total, _ = batch_sizes(server, "idle_batched")
    assert (count - before_count, total - before_sum) == (1, 1)


# Timeouts

def test_rest_timeout(server):
    request = fp32_request(distinct_rows(1, 1),
                           parameters={"timeout": 1000})
    response = server.infer("slow", request)
    assert response.status_code == 504, response.text
    assert "timeout" in response.json()["error"]
    assert_slow_still_serves(server)


def test_rest_timeout_long_enough(server):
    x = distinct_rows(2, 2)
    response = server.infer("slow", fp32_request(
        x, parameters={"timeout": 5_000_000}))
    assert response.status_code == 200, response.text
    assert np.array_equal(oip.outputs_by_name(response.json())["OUTPUT0"],
                          x * 2)


def test_rest_timeout_at_the_int64_limit(server):
    # The largest timeout accepted means "wait as long as it takes", not
    # a deadline that overflows into the past.
    x = distinct_rows(6, 1)
    response = server.infer("slow", fp32_request(
        x, parameters={"timeout": 2**63 - 1}))
    assert response.status_code == 200, response.text
    assert np.array_equal(oip.outputs_by_name(response.json())["OUTPUT0"],
                          x * 2)


def test_grpc_timeout_parameter_at_the_int64_limit(server, client):
    # Without a client deadline, which would shorten the timeout; the wait
    # is bounded here on the client side instead.
    pb = client.pb
    x = distinct_rows(7, 1)
    request = infer_request(
        pb, "slow", [typed_input(pb, "INPUT0", x, "FP32")],
        parameters=parameters(pb, timeout=2**63 - 1))
    call = client.stub.ModelInfer.future(request)
    try:
        arrays, _ = response_arrays(call.result(timeout=REQUEST_TIMEOUT))
    finally:
        call.cancel()
    assert np.array_equal(arrays["OUTPUT0"], x * 2)


@pytest.mark.parametrize("timeout", [-1, "1000", 1.5, True])
def test_rest_timeout_not_a_count_of_microseconds(server, timeout):
    request = fp32_request(distinct_rows(3, 1),
                           parameters={"timeout": timeout})
    response = server.infer("slow", request)
    assert response.status_code == 400, response.text
    assert "timeout" in response.json()["error"]
    assert_slow_still_serves(server)


def test_grpc_client_deadline(server, client):
    pb = client.pb
    request = infer_request(pb, "slow", [typed_input(
        pb, "INPUT0", distinct_rows(4, 1), "FP32")])
    error = client.error("ModelInfer", request, timeout=0.01)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert_slow_still_serves(server)


def test_grpc_timeout_parameter(server, client):
    # No client deadline: the server itself must give up.
    pb = client.pb
    request = infer_request(
        pb, "slow", [typed_input(pb, "INPUT0", distinct_rows(5, 1), "FP32")],
        parameters=parameters(pb, timeout=1000))
    started = time.monotonic()
    error = client.error("ModelInfer", request)
    assert error.code() == grpc.StatusCode.DEADLINE_EXCEEDED, error.details()
    assert "timeout" in error.details()
    assert time.monotonic() - started < 1.0
    assert_slow_still_serves(server)


def test_timeout_while_waiting_in_the_queue(server):
    # Behind a request already running, 20 ms is too little to even start.
    def infer(index):
        if index == 1:
            time.sleep(0.01)
        request = fp32_request(distinct_rows(index, 1), parameters={
            "timeout": 20_000} if index == 1 else {})
        return server.infer("slow", request)

    first, second = concurrently(infer, range(2))
    assert first.status_code == 200, first.text
    assert second.status_code == 504, second.text
    assert "timeout" in second.json()["error"]
    assert_slow_still_serves(server)


# Graceful shutdown

def test_sigterm_finishes_requests_in_flight(servers, grpc_stubs, tmp_path):
    # A queue long enough to hold all of them at once.
    repo = copy_models(tmp_path / "repo", ["slow"])
    (repo / "slow" / "model.json").write_text(
        json.dumps({"instances": 1, "max_queue_size": 8}))
    server = servers.start(repo=repo)
    client = connect(grpc_stubs, server)
    pb = client.pb
    in_flight = 4

    def infer(seed):
        x = distinct_rows(seed, 1)
        if seed == 0:
            arrays, _ = response_arrays(client.infer(infer_request(
                pb, "slow", [typed_input(pb, "INPUT0", x, "FP32")])))
            # An idle channel left open would hold the exit for the 5 s
            # that perch gives gRPC calls to finish.
            client.close()
            return np.array_equal(arrays["OUTPUT0"], x * 2)
        response = server.infer("slow", fp32_request(x))
        assert response.status_code == 200, response.text
        return np.array_equal(
            oip.outputs_by_name(response.json())["OUTPUT0"], x * 2)

    labels = {"model": "slow", "version": "1"}
    with ThreadPoolExecutor(max_workers=in_flight) as pool:
        answers = [pool.submit(infer, seed) for seed in range(in_flight)]
        # Every request has reached the model before the signal.
        assert wait_for(lambda: scrape(server).value(REQUESTS, **labels)
                        == in_flight, REQUEST_TIMEOUT, interval=0.005)
        status = server.stop(signal.SIGTERM)
        assert all(answer.result(timeout=REQUEST_TIMEOUT)
                   for answer in answers)
    assert status == 0, server.logs()
