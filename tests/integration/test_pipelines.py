"""Pipelines: the `wakeword` showcase of the sample repository streamed
chunk by chunk, equal to the chain computed step by step with ONNX Runtime
called directly (ort_reference); pipelines that must not load, and inputs
a pipeline must refuse, with the process and the other models unaffected."""

import copy
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import requests

import grpc
import grpc_oip
import oip
from harness import (ORT_REFERENCE, PERCH_BIN, REQUEST_TIMEOUT,
                     WAKEWORD_MODELS, wait_for)
from mqtt_harness import Broker, Client, start_agent, unique, wait_online

ROOT = Path(__file__).resolve().parents[2]
WAKEWORD_JSON = ROOT / "scripts" / "sample-repo" / "wakeword" / "model.json"
STEP_MODELS = ["melspectrogram", "embedding_model", "hey_jarvis_v0.1",
               "alexa_v0.1", "silero_vad", "timer_v0.1", "weather_v0.1"]
CHUNK = 1280  # 80 ms at 16 kHz
TOLERANCE = 1e-4
PHRASES = {
    "hey_jarvis": "hey jarvis",
    "alexa": "alexa",
    "weather": "what's the weather",
    "unrelated": "the cat sat on the mat",
}
MAX_STREAMS = 50


def pipeline_json(**changes):
    """The wakeword model.json with top-level keys replaced."""
    body = json.loads(WAKEWORD_JSON.read_text())
    body.update(changes)
    return body


def with_step(body, name, **changes):
    body = copy.deepcopy(body)
    for step in body["steps"]:
        if step["name"] == name:
            step.update(changes)
    return body


# Pipelines that must not load, and what the reason must say.
BROKEN = {
    "missing_model": (with_step(pipeline_json(), "mel", model="nowhere"),
                      "step 'mel': model 'nowhere' is not in the repository"),
    "cycle": (with_step(pipeline_json(), "audio_window", input="mel_input"),
              "form a cycle"),
    "twice": (with_step(pipeline_json(), "vad_input", output="mel_input"),
              "tensor 'mel_input' is produced twice"),
    "wrong_datatype": (with_step(pipeline_json(), "audio_float",
                                 datatype="FP64"),
                       "tensor 'mel_input' is FP64 [1,1760] but model "
                       "'melspectrogram' takes FP32"),
    # A step model that is there but fails to load (not an ONNX file).
    "failing_model": (with_step(pipeline_json(), "mel", model="corrupt"),
                      "step 'mel': model 'corrupt'"),
    "wrong_shape": (with_step(pipeline_json(), "mel_input", dims=[1760]),
                    "tensor 'mel_input' is FP32 [1760] but model "
                    "'melspectrogram' takes FP32 [-1,-1]"),
}

# A small stateful pipeline of built-in operations: the stream cap test.
COUNTER = {
    "kind": "pipeline",
    "inputs": [{"name": "x", "datatype": "FP32", "dims": [1]}],
    "outputs": [{"name": "last", "datatype": "FP32", "dims": [4]}],
    "streams": {"max_streams": MAX_STREAMS},
    "steps": [{"name": "window", "op": "window", "input": "x",
               "output": "last", "frames": 4}],
}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipelines") / "repo"
    for model in STEP_MODELS:
        (root / model / "1").mkdir(parents=True)
        shutil.copyfile(WAKEWORD_MODELS / f"{model}.onnx",
                        root / model / "1" / "model.onnx")
    (root / "corrupt" / "1").mkdir(parents=True)
    (root / "corrupt" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    (root / "wakeword").mkdir()
    shutil.copyfile(WAKEWORD_JSON, root / "wakeword" / "model.json")
    for name, (body, _) in BROKEN.items():
        (root / name).mkdir()
        (root / name / "model.json").write_text(json.dumps(body))
    (root / "counter").mkdir()
    (root / "counter" / "model.json").write_text(json.dumps(COUNTER))
    return root


@pytest.fixture(scope="module")
def server(module_servers, repo):
    return module_servers.start(repo=repo)


def speech(workdir, text):
    """`text` spoken by espeak-ng, as 16 kHz 16-bit samples with 1.5 s of
    silence before (the windows fill) and 0.5 s after, in whole chunks."""
    wav = workdir / "speech.wav"
    raw = workdir / "speech.raw"
    subprocess.run(["espeak-ng", "-w", str(wav), text], check=True,
                   timeout=60)
    subprocess.run(["sox", str(wav), "-t", "raw", "-r", "16000", "-c", "1",
                    "-b", "16", "-e", "signed-integer", str(raw),
                    "pad", "1.5", "0.5"], check=True, timeout=60)
    samples = np.frombuffer(raw.read_bytes(), dtype=np.int16)
    padding = (-len(samples)) % CHUNK
    return np.concatenate([samples, np.zeros(padding, np.int16)])


def ort_sequence(workdir, model, requests_inputs, carry=()):
    """Runs ort_reference on a list of requests ({name: (array, datatype)})
    in turn; returns a list of {output name: array}."""
    request_file = workdir / f"{model}.json"
    request_file.write_text(json.dumps([
        {"inputs": [oip.json_input(name, array, datatype)
                    for name, (array, datatype) in inputs.items()]}
        for inputs in requests_inputs]))
    command = [str(ORT_REFERENCE), str(WAKEWORD_MODELS / f"{model}.onnx"),
               str(request_file)]
    for pair in carry:
        command += ["--carry", pair]
    result = subprocess.run(command, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [oip.outputs_by_name(body) for body in json.loads(result.stdout)]


def push(window, rows):
    """The window after rows arrive: its oldest rows dropped."""
    return np.concatenate([window, rows])[len(rows):]


def reference_chain(workdir, samples):
    """The wakeword pipeline computed step by step, one model at a time,
    with ort_reference: per chunk {vad, hey_jarvis, alexa, timer, weather}."""
    chunks = samples.reshape(-1, CHUNK)
    padded = np.concatenate([np.zeros(1760 - CHUNK, np.int16), samples])
    mel = ort_sequence(workdir, "melspectrogram", [
        {"input": (padded[k * CHUNK:k * CHUNK + 1760]
                   .astype(np.float32)[np.newaxis], "FP32")}
        for k in range(len(chunks))])
    mel_window = np.ones((76, 32), np.float32)
    embedding_inputs = []
    for out in mel:
        frames = out["output"].reshape(-1, 32) * np.float32(0.1) \
            + np.float32(2)
        mel_window = push(mel_window, frames)
        embedding_inputs.append(
            {"input_1": (mel_window.reshape(1, 76, 32, 1), "FP32")})
    embeddings = ort_sequence(workdir, "embedding_model", embedding_inputs)
    window = np.zeros((34, 96), np.float32)
    features = []
    for out in embeddings:
        window = push(window, out["conv2d_19"].reshape(1, 96))
        features.append(window.reshape(1, 34, 96).copy())
    heads = {
        "hey_jarvis": ("hey_jarvis_v0.1", "x.1", 16),
        "alexa": ("alexa_v0.1", "onnx::Flatten_0", 16),
        "timer": ("timer_v0.1", "onnx::Flatten_0", 34),
        "weather": ("weather_v0.1", "onnx::Flatten_0", 22),
    }
    results = [{} for _ in chunks]
    for output, (model, input_name, frames) in heads.items():
        answers = ort_sequence(workdir, model, [
            {input_name: (f[:, -frames:], "FP32")} for f in features])
        for result, answer in zip(results, answers):
            (result[output],) = answer.values()
    state = np.zeros((2, 1, 64), np.float32)
    vad = ort_sequence(workdir, "silero_vad", [
        {"input": ((chunk.astype(np.float32) * np.float32(1 / 32768))
                   [np.newaxis], "FP32"),
         "sr": (np.array(16000, np.int64), "INT64"),
         "h": (state, "FP32"), "c": (state, "FP32")}
        for chunk in chunks], carry=("hn=h", "cn=c"))
    for result, answer in zip(results, vad):
        result["vad"] = answer["output"]
    return results


def chunk_request(stream_id, chunk, **fields):
    """An infer request of one chunk, its stream named by the request
    parameter stream_id, as the Open Inference Protocol carries parameters."""
    return {**fields, "parameters": {"stream_id": stream_id},
            "inputs": [oip.json_input("audio", chunk, "INT16")]}


def infer_chunk(server, stream_id, chunk, model="wakeword"):
    return server.infer(model, chunk_request(stream_id, chunk))


def answers_by_name(response):
    assert response.status_code == 200, response.text
    body = response.json()
    outputs = {o["name"]: o for o in body["outputs"]}
    return {name: (o["data"][0] if o["datatype"] == "BYTES"
                   else oip.output_array(o))
            for name, o in outputs.items()}


PEAKS = {}


@pytest.mark.parametrize("phrase", list(PHRASES))
def test_streamed_speech_equals_the_step_by_step_chain(server, tmp_path,
                                                       phrase):
    samples = speech(tmp_path, PHRASES[phrase])
    expected = reference_chain(tmp_path, samples)
    peaks = {"vad": 0.0, "hey_jarvis": 0.0, "alexa": 0.0}
    fired = 0
    for k, chunk in enumerate(samples.reshape(-1, CHUNK)):
        answer = answers_by_name(infer_chunk(server, f"{phrase}-1", chunk))
        reference = expected[k]
        for name in ("vad", "hey_jarvis", "alexa"):
            error = np.max(np.abs(answer[name] - reference[name]))
            assert error <= TOLERANCE, f"chunk {k}: {name} off by {error}"
            peaks[name] = max(peaks[name], float(reference[name].max()))
        wake = max(float(reference["hey_jarvis"][0, 0]),
                   float(reference["alexa"][0, 0]))
        if abs(wake - 0.5) <= TOLERANCE:
            continue  # too close to the threshold to say which branch runs
        assert answer["branch"] == ("then" if wake >= 0.5 else "else"), k
        if answer["branch"] == "then":
            fired += 1
            for name in ("timer", "weather"):
                error = np.max(np.abs(answer[name] - reference[name]))
                assert error <= TOLERANCE, f"chunk {k}: {name} off by {error}"
        else:
            assert "timer" not in answer and "weather" not in answer
    if phrase in ("hey_jarvis", "alexa"):
        assert peaks[phrase] >= 0.5, peaks  # the score rises on its phrase
        assert fired >= 1
    PEAKS[phrase] = peaks | {"chunks fired": fired}
    print(f"\npeaks for {PHRASES[phrase]!r}: {PEAKS[phrase]}")


def test_streams_do_not_share_state(server):
    """The same chunk on a fresh stream answers as on any fresh stream,
    whatever other streams heard before."""
    rng = np.random.default_rng(3)
    noise = rng.integers(-3000, 3000, CHUNK, dtype=np.int16)
    for i in range(3):
        infer_chunk(server, "busy", noise)
    fresh_a = answers_by_name(infer_chunk(server, "fresh-a", noise))
    fresh_b = answers_by_name(infer_chunk(server, "fresh-b", noise))
    busy = answers_by_name(infer_chunk(server, "busy", noise))
    assert np.array_equal(fresh_a["vad"], fresh_b["vad"])
    assert not np.array_equal(fresh_a["vad"], busy["vad"])


def index(server):
    response = server.post("/v2/repository/index")
    assert response.status_code == 200, response.text
    return {entry["name"]: entry for entry in response.json()}


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_broken_pipeline_is_not_ready_and_says_why(server, name):
    entry = index(server)[name]
    assert entry["state"] == "UNAVAILABLE", entry
    assert BROKEN[name][1] in entry["reason"], entry["reason"]
    assert server.get(f"/v2/models/{name}/ready").status_code != 200
    # The other models and the good pipeline are unaffected.
    assert server.get("/v2/models/wakeword/ready").status_code == 200
    assert server.get("/v2/models/melspectrogram/ready").status_code == 200


def test_pipeline_metadata(server):
    body = server.get("/v2/models/wakeword").json()
    # The stream is a request parameter, not an input.
    assert [i["name"] for i in body["inputs"]] == ["audio"]
    assert body["inputs"][0] == {"name": "audio", "datatype": "INT16",
                                 "shape": [1280]}
    assert [o["name"] for o in body["outputs"]] == [
        "vad", "hey_jarvis", "alexa", "branch", "timer", "weather"]


def test_a_chunk_of_the_wrong_length_is_refused(server):
    response = infer_chunk(server, "short", np.zeros(1000, np.int16))
    assert response.status_code == 400, response.text
    assert "audio" in response.json()["error"]
    assert infer_chunk(server, "short", np.zeros(CHUNK, np.int16)) \
        .status_code == 200


def test_a_missing_stream_id_is_refused(server):
    silence = np.zeros(CHUNK, np.int16)
    response = server.infer("wakeword", {"inputs": [
        oip.json_input("audio", silence, "INT16")]})
    assert response.status_code == 400, response.text
    assert "pipeline 'wakeword' keeps state per stream: name the stream in " \
        "the request parameter \"stream_id\"" in response.json()["error"]
    other = server.infer("wakeword", {**chunk_request("x", silence),
                                      "parameters": {"stream": "x"}})
    assert other.status_code == 400, other.text
    assert "request parameter \"stream_id\"" in other.json()["error"]
    empty = infer_chunk(server, "", silence)
    assert empty.status_code == 400, empty.text
    assert "\"stream_id\" must name the stream in 1 to 256 bytes" \
        in empty.json()["error"]
    too_long = infer_chunk(server, "s" * 257, silence)
    assert too_long.status_code == 400, too_long.text
    wrong_type = infer_chunk(server, True, silence)
    assert wrong_type.status_code == 400, wrong_type.text
    assert "\"stream_id\" must be a string (or an integer), not a boolean" \
        in wrong_type.json()["error"]
    # The stream as a BYTES input, as before parameters: not an input now.
    as_input = server.infer("wakeword", {"inputs": [
        oip.json_input("audio", silence, "INT16"),
        {"name": "stream_id", "datatype": "BYTES", "shape": [1],
         "data": ["kitchen"]}]})
    assert as_input.status_code == 400, as_input.text
    assert "stream_id" in as_input.json()["error"]
    # An integer names a stream too, as its decimal text.
    assert infer_chunk(server, 7, silence).status_code == 200
    server.assert_alive()


@pytest.mark.parametrize("parameters, message", [
    (["stream_id", "a"], "\"parameters\" of the request must be an object"),
    ({"stream_id": {"id": "a"}}, "parameter \"stream_id\" is an object"),
    ({"stream_id": ["a"]}, "parameter \"stream_id\" is an array"),
    ({f"p{i}": i for i in range(65)}, "at most 64 parameters"),
    ({"p" * 200: 1}, "a parameter name must have 1 to 128 bytes"),
    ({"note": "n" * 5000}, "\"note\" is a string of 5000 bytes"),
])
def test_bad_parameters_are_refused(server, parameters, message):
    """Bad parameters are refused by every model, a pipeline or not."""
    for model in ("wakeword", "melspectrogram"):
        response = server.infer(model, {"parameters": parameters, "inputs": []})
        assert response.status_code == 400, response.text
        assert message in response.json()["error"], response.text


def test_binary_requests_carry_the_stream_in_their_json_header(server):
    """The binary tensor extension: parameters in the JSON header, the audio
    after it; the same answers as JSON requests of another stream."""
    chunks = noise_chunks(3, seed=14)
    expected = rest_answers(server, "json-twin", chunks)
    answers = []
    for chunk in chunks:
        described, raw = oip.binary_input("audio", chunk, "INT16")
        body, headers = oip.binary_body(
            {"parameters": {"stream_id": "binary-1"}, "inputs": [described]},
            [raw])
        answers.append(answers_by_name(server.infer("wakeword", body,
                                                    headers=headers)))
    assert_same_scores(answers, expected)


def metric(server, name, **labels):
    text = server.get("/metrics").text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.match(r'^(\w+)\{([^}]*)\}\s+(\S+)$', line)
        if match and match[1] == name and \
                ",".join(sorted(match[2].split(","))) == wanted:
            return float(match[3])
    return None


def test_many_stream_ids_keep_memory_bounded(server):
    """Far more stream ids than the cap: the least recently used go, each
    counted, and the pipeline keeps answering."""
    count = 20 * MAX_STREAMS
    with requests.Session() as session:
        for i in range(count):
            response = session.post(
                server.url + "/v2/models/counter/infer",
                json={"parameters": {"stream_id": f"s{i}"}, "inputs": [
                    {"name": "x", "datatype": "FP32", "shape": [1],
                     "data": [float(i)]}]},
                timeout=REQUEST_TIMEOUT)
            assert response.status_code == 200, response.text
    assert metric(server, "perch_pipeline_streams", model="counter") \
        == MAX_STREAMS
    assert metric(server, "perch_pipeline_streams_dropped_total",
                  model="counter", reason="full") == count - MAX_STREAMS
    server.assert_alive()


def batch_peak_rss(repo, workdir, stream_of):
    """Runs `perch batch` on 100,000 requests of the counter pipeline, the
    stream of request i named stream_of(i); returns (the last answer, the
    process's peak resident KiB, measured by a parent of its own)."""
    count = 100_000
    inputs = workdir / "in.jsonl"
    with open(inputs, "w") as out:
        for i in range(count):
            out.write(json.dumps({
                "id": str(i), "parameters": {"stream_id": stream_of(i)},
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [1],
                            "data": [float(i)]}]}) + "\n")
    measure = ("import resource, subprocess, sys\n"
               "code = subprocess.run(sys.argv[1:]).returncode\n"
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
               "sys.exit(code)\n")
    result = subprocess.run(
        ["/usr/bin/python3", "-c", measure, str(PERCH_BIN), "batch", "--repo", str(repo),
         "--model", "counter", "--input", str(inputs), "--output", str(workdir / "out"),
         "--log-level", "warn"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = (workdir / "out" / "in.jsonl").read_text().splitlines()
    assert len(lines) == count
    last = max((json.loads(line) for line in lines[-1000:]), key=lambda r: int(r["id"]))
    return last, int(result.stdout.split()[-1])


def test_100000_stream_ids_keep_memory_bounded(repo, tmp_path):
    """Issue 14's 100,000 distinct stream ids (through perch batch, in
    process, so it takes seconds): every request answers, each new stream
    starts afresh, and the process's peak memory is that of one stream."""
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    _, one = batch_peak_rss(repo, tmp_path / "one", lambda i: "mic")
    last, many = batch_peak_rss(repo, tmp_path / "many", lambda i: f"s{i}")
    assert last["outputs"][0]["data"] == [0.0, 0.0, 0.0, 99_999.0], last
    assert many <= one + 8 * 1024, (one, many)


def test_per_step_metrics(server):
    infer_chunk(server, "metrics", np.zeros(CHUNK, np.int16))
    for step in ("mel", "embedding", "hey_jarvis", "vad", "audio_window"):
        assert metric(server, "perch_pipeline_step_seconds_count",
                      model="wakeword", step=step) >= 1, step
    # The step models count what the pipeline ran on them.
    assert metric(server, "perch_inference_requests_total",
                  model="melspectrogram", version="1") >= 1


# --- the same pipeline over gRPC, MQTT event streams and perch batch -------

grpc_stubs = grpc_oip.grpc_stubs


def noise_chunks(count, seed=11):
    rng = np.random.default_rng(seed)
    return [rng.integers(-4000, 4000, CHUNK, dtype=np.int16)
            for _ in range(count)]


def rest_answers(server, stream_id, chunks):
    return [answers_by_name(infer_chunk(server, stream_id, chunk))
            for chunk in chunks]


def assert_same_scores(answers, expected):
    assert len(answers) == len(expected)
    for k, (answer, reference) in enumerate(zip(answers, expected)):
        for name in ("vad", "hey_jarvis", "alexa"):
            error = np.max(np.abs(np.asarray(answer[name], np.float32)
                                  .reshape(-1) - reference[name].reshape(-1)))
            assert error <= TOLERANCE, f"chunk {k}: {name} off by {error}"


def test_grpc_streams_answer_as_rest_does(server, grpc_stubs):
    chunks = noise_chunks(6)
    expected = rest_answers(server, "grpc-rest", chunks)
    client = grpc_oip.connect(grpc_stubs, server)
    pb = client.pb
    try:
        answers = []
        for chunk in chunks:
            request = pb.ModelInferRequest(model_name="wakeword", inputs=[
                grpc_oip.typed_input(pb, "audio", chunk, "INT16")])
            request.parameters["stream_id"].string_param = "grpc-1"
            response = client.infer(request)
            answers.append(grpc_oip.response_arrays(response)[0])
        # No stream: INVALID_ARGUMENT naming the parameter.
        request = pb.ModelInferRequest(model_name="wakeword", inputs=[
            grpc_oip.typed_input(pb, "audio", chunks[0], "INT16")])
        with pytest.raises(grpc.RpcError) as missing:
            client.infer(request)
        assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "request parameter \"stream_id\"" in missing.value.details()
        # A parameter without a value is refused as the decoder reads it.
        request.parameters["stream_id"].Clear()
        with pytest.raises(grpc.RpcError) as empty:
            client.infer(request)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "parameter \"stream_id\" has no value" in empty.value.details()
    finally:
        client.close()
    assert_same_scores(answers, expected)


def test_perch_batch_streams_a_file_of_chunks(server, repo, tmp_path):
    chunks = noise_chunks(5, seed=12)
    expected = rest_answers(server, "batch-rest", chunks)
    inputs = tmp_path / "mic.jsonl"
    inputs.write_text("".join(
        json.dumps(chunk_request("mic", chunk, id=str(k))) + "\n"
        for k, chunk in enumerate(chunks)))
    result = subprocess.run(
        [str(PERCH_BIN), "batch", "--repo", str(repo), "--model", "wakeword",
         "--input", str(inputs), "--output", str(tmp_path / "out"),
         "--concurrency", "1", "--log-level", "warn"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in
               (tmp_path / "out" / "mic.jsonl").read_text().splitlines()]
    answers = [{o["name"]: np.array(o["data"], np.float32)
                for o in record["outputs"] if o["datatype"] == "FP32"}
               for record in records]
    assert_same_scores(answers, expected)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    broker = Broker(tmp_path_factory.mktemp("broker")).start()
    yield broker
    broker.stop()


def test_an_mqtt_microphone_gets_detections_as_events(
        module_servers, server, broker, tmp_path_factory):
    """A microphone publishes 80 ms chunks on its topic; every answer is
    published as an event, equal to what REST answers for the same audio."""
    base = unique("mics")
    events = f"{base}/detections"
    stream_repo = tmp_path_factory.mktemp("mqtt") / "repo"
    shutil.copytree(server.repo, stream_repo, ignore=shutil.ignore_patterns(
        *BROKEN, "counter"))
    body = json.loads(WAKEWORD_JSON.read_text())
    body["mqtt"] = {"input_topic": f"{base}/+/audio", "output_topic": events}
    (stream_repo / "wakeword" / "model.json").write_text(json.dumps(body))
    start_agent(module_servers, broker, "lab", "mic-agent", repo=stream_repo,
                state=tmp_path_factory.mktemp("state"))
    listener = Client(broker.port).connect()
    try:
        wait_online(listener, "lab", "mic-agent")
        listener.subscribe(events)
        chunks = noise_chunks(6, seed=13)
        for k, chunk in enumerate(chunks):
            listener.publish(f"{base}/kitchen/audio", json.dumps(
                chunk_request("kitchen", chunk, id=str(k))))
        messages = listener.collect(len(chunks))
    finally:
        listener.close()
    assert len(messages) == len(chunks), messages
    answers = [oip.outputs_by_name(m.json()) for m in messages]
    assert [m.json()["id"] for m in messages] == \
        [str(k) for k in range(len(chunks))]
    assert_same_scores(answers, rest_answers(server, "mqtt-rest", chunks))


def test_editing_the_pipeline_reloads_it(module_servers, repo,
                                         tmp_path_factory):
    """A changed model.json is served after the next poll; the step models
    keep serving throughout."""
    reload_repo = tmp_path_factory.mktemp("reload") / "repo"
    shutil.copytree(repo, reload_repo, ignore=shutil.ignore_patterns(
        *BROKEN))
    agent = module_servers.start(repo=reload_repo,
                                 args=["--poll", "0.2"])
    body = json.loads(WAKEWORD_JSON.read_text())
    body["outputs"] = body["outputs"][:1]
    (reload_repo / "wakeword" / "model.json").write_text(json.dumps(body))

    def outputs_now():
        metadata = agent.get("/v2/models/wakeword").json()
        return [o["name"] for o in metadata.get("outputs", [])]
    wait_for(lambda: outputs_now() == ["vad"], 20,
             what="the edited pipeline to be served")
    assert agent.get("/v2/models/melspectrogram/ready").status_code == 200
    assert list(answers_by_name(infer_chunk(
        agent, "after", np.zeros(CHUNK, np.int16)))) == ["vad"]
