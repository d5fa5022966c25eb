"""`perch serve --model REF`: pulled from a real Distribution registry into
--state, served, and still served from the cache when the registry is gone."""

import shutil

import pytest

from harness import TEST_MODELS, WAKEWORD_MODELS, PerchServer
from registry_harness import (Registry, digest_of, index_row, infer,
                              model_server, perch)

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"


@pytest.fixture
def registry(tmp_path):
    registry = Registry(tmp_path / "registry").start()
    yield registry
    registry.stop()


def push_jarvis(registry, tmp_path):
    repo = tmp_path / "src"
    (repo / "hey_jarvis" / "1").mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, repo / "hey_jarvis" / "1" / "model.onnx")
    ref = f"{registry.host}/wakeword/hey_jarvis:1"
    return repo, ref, digest_of(perch("push", repo / "hey_jarvis", ref).stdout)


def test_serves_a_pulled_model_like_a_local_one(registry, tmp_path):
    repo, ref, digest = push_jarvis(registry, tmp_path)
    state = tmp_path / "state"
    pulled = model_server(tmp_path, [ref], state).start()
    local = PerchServer(repo, tmp_path, ()).start()
    try:
        assert infer(pulled, "hey_jarvis") == infer(local, "hey_jarvis")
        assert pulled.get("/v2/models/hey_jarvis").json() == \
            local.get("/v2/models/hey_jarvis").json()
        row = index_row(pulled, "hey_jarvis")
        assert row["state"] == "READY" and row["version"] == "1"
        assert row["artifact"] == {"reference": ref, "digest": digest}
        assert "artifact" not in index_row(local, "hey_jarvis")
    finally:
        assert pulled.stop() == 0
        assert local.stop() == 0
    assert digest in pulled.logs()
    assert (state / "models" / "hey_jarvis" / "1" / "model.onnx").read_bytes() \
        == HEY_JARVIS.read_bytes()
    assert (state / "pulled.json").exists()


def test_keeps_serving_from_the_cache_without_the_registry(registry, tmp_path):
    _, ref, digest = push_jarvis(registry, tmp_path)
    state = tmp_path / "state"
    first = model_server(tmp_path, [ref], state).start()
    expected = infer(first, "hey_jarvis")
    assert first.stop() == 0

    registry.stop()
    second = model_server(tmp_path, [ref], state).start()
    try:
        assert infer(second, "hey_jarvis") == expected
        assert index_row(second, "hey_jarvis")["artifact"]["digest"] == digest
    finally:
        assert second.stop() == 0
    logs = second.logs()
    assert f"registry {registry.host} is unreachable" in logs
    assert f"serving the cached {digest}" in logs


def test_an_unknown_reference_without_cache_refuses_to_start(registry, tmp_path):
    server = model_server(tmp_path, [f"{registry.host}/no/such:1"],
                          tmp_path / "state")
    result = perch(*server.command[1:], check=False, timeout=30)
    assert result.returncode == 1
    assert "cannot serve --model" in result.stderr
    assert "not found" in result.stderr


def test_repo_and_model_exclude_each_other(tmp_path):
    result = perch("serve", "--repo", tmp_path, "--model", "127.0.0.1:1/a/b:1",
                   check=False)
    assert result.returncode == 1
    assert "--repo and --model exclude each other" in result.stderr
    result = perch("serve", check=False)
    assert result.returncode == 1
    assert "give --repo DIR" in result.stderr


def test_a_model_dropped_from_the_command_line_is_no_longer_served(
        registry, tmp_path):
    _, jarvis, _ = push_jarvis(registry, tmp_path)
    fixed = f"{registry.host}/tests/fixed:1"
    perch("push", TEST_MODELS / "fixed", fixed)
    state = tmp_path / "state"
    both = model_server(tmp_path, [jarvis, fixed], state).start()
    assert {r["name"] for r in both.post("/v2/repository/index").json()} == \
        {"hey_jarvis", "fixed"}
    assert both.stop() == 0
    one = model_server(tmp_path, [fixed], state).start()
    try:
        assert [r["name"] for r in one.post("/v2/repository/index").json()] \
            == ["fixed"]
    finally:
        assert one.stop() == 0
