"""perch push / pull / ls / inspect / tag / rm against a real Distribution
registry, with real models (openWakeWord's hey_jarvis and the test models)."""

import json
import shutil

import pytest

from harness import TEST_MODELS, WAKEWORD_MODELS, expected_metadata
from registry_harness import Registry, digest_of, files_of, perch

HEY_JARVIS = WAKEWORD_MODELS / "hey_jarvis_v0.1.onnx"


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    registry = Registry(tmp_path_factory.mktemp("registry")).start()
    yield registry
    registry.stop()


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def wakeword_repo(root):
    (root / "hey_jarvis" / "1").mkdir(parents=True)
    shutil.copyfile(HEY_JARVIS, root / "hey_jarvis" / "1" / "model.onnx")
    return root


def pulled_files(folder):
    files = files_of(folder)
    record = json.loads(files.pop(".perch-artifact.json"))
    return files, record


def test_push_then_pull_gives_the_same_bytes(registry, tmp_path, cache):
    source = wakeword_repo(tmp_path / "src")
    ref = f"{registry.host}/wakeword/hey_jarvis:1"
    pushed = perch("push", source / "hey_jarvis", ref)
    digest = digest_of(pushed.stdout)
    assert "pushed hey_jarvis version 1" in pushed.stdout

    # The same model pushed again is the same artifact, and uploads nothing.
    again = perch("push", source / "hey_jarvis", ref)
    assert digest_of(again.stdout) == digest
    assert "0 B uploaded" in again.stdout

    out = tmp_path / "out"
    pulled = perch("pull", ref, "--to", out, "--cache", cache)
    assert digest_of(pulled.stdout) == digest
    files, record = pulled_files(out / "hey_jarvis" / "1")
    assert files == files_of(source / "hey_jarvis" / "1")
    assert record == {"reference": ref, "digest": digest}
    # A second pull finds the version installed and leaves it.
    again = perch("pull", ref, "--to", out, "--cache", cache)
    assert "already installed" in again.stdout

    # By digest too.
    by_digest = tmp_path / "by-digest"
    perch("pull", f"{registry.host}/wakeword/hey_jarvis@{digest}", "--to",
          by_digest, "--cache", cache)
    assert pulled_files(by_digest / "hey_jarvis" / "1")[0] == files


def test_inspect_shows_metadata_read_from_the_model(registry, tmp_path):
    ref = f"{registry.host}/wakeword/jarvis-file:7"
    perch("push", HEY_JARVIS, ref, "--version", "7", "--name", "hey_jarvis")
    shown = json.loads(perch("inspect", ref, "--json").stdout)
    assert shown["artifactType"] == "application/vnd.perch.model.v1"
    assert shown["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    model = shown["model"]
    assert model["name"] == "hey_jarvis" and model["version"] == 7
    assert model["platform"] == "onnx"
    assert model["architectures"] == ["amd64", "arm64"]
    expected = expected_metadata(HEY_JARVIS)
    assert model["inputs"] == expected["inputs"]
    assert model["outputs"] == expected["outputs"]
    assert shown["layers"] == [{
        "path": "model.onnx",
        "mediaType": "application/vnd.cncf.model.weight.v1.raw",
        "digest": shown["layers"][0]["digest"],
        "size": HEY_JARVIS.stat().st_size}]
    text = perch("inspect", ref).stdout
    assert "hey_jarvis version 7" in text and "model.onnx" in text


def test_model_json_and_external_data_travel(registry, tmp_path, cache):
    for model in ("batched", "external_inside"):
        ref = f"{registry.host}/tests/{model}:1"
        # A version folder (NAME/N/): model.json comes from NAME/.
        perch("push", TEST_MODELS / model / "1", ref)
        out = tmp_path / model
        perch("pull", ref, "--to", out, "--cache", cache)
        files, _ = pulled_files(out / model / "1")
        assert files == files_of(TEST_MODELS / model / "1")
        config = TEST_MODELS / model / "model.json"
        if config.exists():
            assert json.loads((out / model / "model.json").read_text()) == \
                json.loads(config.read_text())
        else:
            assert not (out / model / "model.json").exists()


def test_chunked_upload_of_a_bigger_blob(registry, tmp_path, cache):
    ref = f"{registry.host}/wakeword/chunked:1"
    perch("push", HEY_JARVIS, ref, "--chunk-size", "65536")
    out = tmp_path / "out"
    perch("pull", ref, "--to", out, "--cache", cache)
    assert (out / "chunked" / "1" / "model.onnx").read_bytes() == \
        HEY_JARVIS.read_bytes()


def test_ls_tag_and_rm(registry, tmp_path):
    ref = f"{registry.host}/lsdemo/fixed:1"
    digest = digest_of(perch("push", TEST_MODELS / "fixed", ref).stdout)
    assert "lsdemo/fixed" in perch("ls", registry.host).stdout.split()

    tagged = perch("tag", ref, "stable")
    assert digest_of(tagged.stdout) == digest
    assert perch("ls", f"{registry.host}/lsdemo/fixed").stdout.split() == \
        ["1", "stable"]

    # Into another repository of the same registry: blobs are mounted.
    other = f"{registry.host}/lsdemo/copy:1"
    assert digest_of(perch("tag", ref, other).stdout) == digest
    assert json.loads(perch("inspect", other, "--json").stdout)["digest"] \
        == digest

    removed = perch("rm", f"{registry.host}/lsdemo/fixed:stable")
    assert digest in removed.stdout
    assert perch("ls", f"{registry.host}/lsdemo/fixed").stdout.split() == []
    gone = perch("inspect", ref, check=False)
    assert gone.returncode == 1
    assert "not found" in gone.stderr
    # The copy has its own manifest entry and survives.
    perch("inspect", other)


def test_errors_say_what_to_fix(registry, tmp_path):
    unreachable = perch("pull", "127.0.0.1:1/nothing/here:1", "--to", tmp_path,
                        "--cache", tmp_path / "cache", check=False)
    assert unreachable.returncode == 1
    assert "registry 127.0.0.1:1 is unreachable: connection refused" \
        in unreachable.stderr

    missing = perch("pull", f"{registry.host}/no/such:1", "--to", tmp_path,
                    "--cache", tmp_path / "cache", check=False)
    assert missing.returncode == 1
    assert f"{registry.host}/no/such:1 not found" in missing.stderr

    bad_ref = perch("push", HEY_JARVIS, "no-host-here", check=False)
    assert bad_ref.returncode == 1

    not_a_model = tmp_path / "notes.txt"
    not_a_model.write_text("hello")
    refused = perch("push", not_a_model, f"{registry.host}/x/y:1", check=False)
    assert refused.returncode == 1
    assert "not an .onnx file" in refused.stderr

    bad_config = tmp_path / "bad" / "bad"
    shutil.copytree(TEST_MODELS / "fixed", bad_config)
    (bad_config / "model.json").write_text('{"max_batch_sise": 2}')
    refused = perch("push", bad_config, f"{registry.host}/x/bad:1", check=False)
    assert refused.returncode == 1
    assert "max_batch_sise" in refused.stderr

