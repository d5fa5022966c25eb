"""perch_dask: runs `perch batch` on a Dask cluster.

The driver (this module, in the process that holds the Dask client) splits
each JSON Lines input into partitions of whole lines and submits one task
per partition; a task runs `perch batch --input - --output -` (pipe mode) on
its worker and returns the records. The driver writes them in input order
into the same output layout a local `perch batch` writes (docs/batch.md):

    DIR/<input name>     the records, in input order
    DIR/.<name>.partial  a file being written; renamed when whole
    DIR/_MODEL           the model the folder's results come from
    DIR/_SUCCESS         the job's summary, written last

Before any task runs, every worker pulls (or finds) the model once into a
state folder of its own (`perch batch --pull-only`), and all of them must
agree on its manifest digest; a model that cannot be pulled fails the job
with the worker's error and nothing is scored.

A task's result is all of its partition's records or nothing: Dask runs a
partition again when its worker dies, and only the one result the driver
receives is written, so every record is present exactly once.

Only the standard library and Debian's python3-distributed are used. The
task functions travel by value (cloudpickle), so the workers need perch but
not this package.
"""

import fcntl
import hashlib
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import cloudpickle

__all__ = ["PerchBatchError", "run_batch"]

MODEL_FILE = "_MODEL"
SUCCESS_FILE = "_SUCCESS"
ERROR_PREFIX = b'{"id":'


class PerchBatchError(Exception):
    """A job that cannot run or could not finish; the message says why."""


# --- on the workers ------------------------------------------------------

def _worker_state(worker):
    return os.path.join(worker.local_directory, "perch-state")


def _prepare_on(worker, perch, model, extra_args, token, refresh=False):
    """Pulls and loads `model` into this worker's state; the identity is
    kept in the state folder, so the job's tasks find it without a registry
    (`refresh` resolves the reference again: each job starts so, and a tag
    that moved is seen). A lock keeps two tasks of one worker from pulling
    at the same time."""
    state = _worker_state(worker)
    os.makedirs(state, exist_ok=True)
    key = hashlib.sha256(json.dumps([model, extra_args]).encode()).hexdigest()[:16]
    record = os.path.join(state, f"prepared-{key}.json")
    with open(os.path.join(state, ".perch-dask.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not refresh and os.path.exists(record):
            with open(record) as f:
                return json.load(f)
        result = subprocess.run(
            [perch, "batch", "--model", model, "--state", state, "--pull-only",
             "--log-level", "warn", *extra_args],
            capture_output=True, text=True,
            env={**os.environ, "PERCH_TOKEN": token} if token else None)
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip() or
                               f"perch batch --pull-only exited {result.returncode}")
        identity = json.loads(result.stdout)
        tmp = record + ".tmp"
        with open(tmp, "w") as f:
            json.dump(identity, f)
        os.replace(tmp, record)
        return identity


def _prepare_worker(perch, model, extra_args, token, dask_worker=None):
    """client.run's function: the model's identity on this worker."""
    return _prepare_on(dask_worker, perch, model, extra_args, token, refresh=True)


def _score_partition(perch, model, extra_args, token, run_args, digest, lines, first_line):
    """One task: the records of `lines` (whole lines, the first numbered
    `first_line`), all or nothing."""
    from distributed import get_worker

    identity = _prepare_on(get_worker(), perch, model, extra_args, token)
    if identity["model_digest"] != digest:
        raise RuntimeError(f"this worker has {identity['model_digest']} for {model}, "
                           f"the job runs {digest}")
    result = subprocess.run(
        [perch, "batch", "--model", identity["model_folder"], "--input", "-",
         "--output", "-", "--first-line", str(first_line), "--log-level", "warn",
         *run_args],
        input=lines, capture_output=True)
    if result.returncode != 0:
        raise RuntimeError(result.stderr.decode(errors="replace").strip() or
                           f"perch batch exited {result.returncode}")
    return result.stdout


# --- on the driver -------------------------------------------------------

def _model_json(identity):
    return {key: identity[key] for key in ("model_digest", "model_name", "model_version")}


def _recorded_model(folder):
    for name in (MODEL_FILE, SUCCESS_FILE):
        try:
            data = json.loads((folder / name).read_text())
        except (OSError, ValueError):
            continue
        data = data.get("model", data) if isinstance(data, dict) else None
        if isinstance(data, dict) and isinstance(data.get("model_digest"), str):
            return data
    return None


def _write_atomically(path, text):
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _sync_folder(path.parent)


def _sync_folder(folder):
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _open_output(output, identity):
    """The output folder, checked and marked as local `perch batch` does."""
    folder = Path(output)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise PerchBatchError(f"cannot create --output {output}: {error.strerror}") from None
    recorded = _recorded_model(folder)
    if recorded and recorded["model_digest"] != identity["model_digest"]:
        raise PerchBatchError(
            f"--output {output} holds the results of model '{recorded.get('model_name')}' "
            f"version {recorded.get('model_version')} ({recorded['model_digest']}), not of "
            f"'{identity['model_name']}' version {identity['model_version']} "
            f"({identity['model_digest']}): give another --output, or empty it")
    try:
        _write_atomically(folder / MODEL_FILE,
                          json.dumps(_model_json(identity), sort_keys=True,
                                     separators=(",", ":")) + "\n")
        (folder / SUCCESS_FILE).unlink(missing_ok=True)
    except OSError as error:
        raise PerchBatchError(f"cannot write to --output {output}: {error}") from None
    return folder


def _list_inputs(inputs):
    """(path, output name) of every JSON Lines input: files as given,
    folders by their *.jsonl files."""
    found = []
    for text in inputs:
        path = Path(text)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            lines = sorted(p for p in path.iterdir() if p.suffix == ".jsonl" and p.is_file())
            if not lines:
                has_arrays = any(p.suffix == ".npy" for p in path.iterdir())
                raise PerchBatchError(
                    f"--input {text} holds no .jsonl files"
                    + ("; the Dask runner scores JSON Lines: run .npy folders locally"
                       if has_arrays else ""))
            found.extend(lines)
        else:
            raise PerchBatchError(f"cannot read --input {text}: no such file or folder")
        if not os.access(path, os.R_OK):
            raise PerchBatchError(f"cannot read --input {text}: permission denied")
    names = {}
    for path in found:
        if path.name[0] in "_.":
            raise PerchBatchError(f"--input {path}: output names starting with '_' or '.' "
                                  "are the output folder's own; rename the file")
        if path.name in names:
            raise PerchBatchError(f"--input {names[path.name]} and {path} would both write "
                                  f"{path.name}; rename one")
        names[path.name] = path
    return found


def _count(records):
    lines = [line for line in records.split(b"\n") if line]
    return len(lines), sum(1 for line in lines if line.startswith(ERROR_PREFIX))


def _partitions(path, size):
    """(first line number, bytes of whole lines) of `path`, `size` lines each."""
    with open(path, "rb") as f:
        first, chunk = 1, []
        for number, line in enumerate(f, start=1):
            chunk.append(line if line.endswith(b"\n") else line + b"\n")
            if len(chunk) == size:
                yield first, b"".join(chunk)
                first, chunk = number + 1, []
        if chunk:
            yield first, b"".join(chunk)


def _score_file(client, path, folder, submit, in_flight):
    """Scores one input into folder/<name>, partitions in order; returns
    (records, errors, partitions)."""
    from distributed import as_completed

    partial = folder / f".{path.name}.partial"
    pending = _partitions(path, submit.partition_lines)
    results = {}
    index_of = {}  # future key -> partition number
    next_index, next_write, records, errors = 0, 0, 0, 0
    futures = as_completed()
    exhausted = False

    def add_more():
        nonlocal next_index, exhausted
        while not exhausted and next_index - next_write < in_flight:
            part = next(pending, None)
            if part is None:
                exhausted = True
                return
            future = submit(*part, key=f"perch-batch-{path.name}-{next_index}-{uuid.uuid4().hex}")
            index_of[future.key] = next_index
            futures.add(future)
            next_index += 1

    with open(partial, "wb") as out:
        add_more()
        for future in futures:
            try:
                results[index_of.pop(future.key)] = future.result()
            except Exception as error:  # the task's own error, as the worker raised it
                for other in list(futures.futures):
                    other.cancel()
                raise PerchBatchError(f"{path}: a partition failed: {error}") from None
            while next_write in results:
                data = results.pop(next_write)
                out.write(data)
                count, bad = _count(data)
                records, errors = records + count, errors + bad
                next_write += 1
            add_more()
        out.flush()
        os.fsync(out.fileno())
    os.replace(partial, folder / path.name)
    _sync_folder(folder)
    return records, errors, next_index


def run_batch(client, model, inputs, output, perch="perch", partition_lines=256,
              max_batch=1, concurrency=1, threads=0, registry_args=(), repo=None,
              log=lambda message: print(message, file=sys.stderr)):
    """Scores `inputs` (JSON Lines files, or folders of them) with `model`
    on `client`'s cluster into `output`; returns the _SUCCESS summary.

    `model` is what `perch batch --model` takes (a registry reference,
    best by digest; or a model folder every worker can read, or a name in
    `repo`). `perch` is the perch binary's path on the workers. Raises
    PerchBatchError with the reason when the job cannot run or a partition
    fails; files finished before stay finished, and a re-run skips them."""
    started = time.monotonic()
    partition_lines = max(1, -(-int(partition_lines) // max_batch) * max_batch)
    extra_args = [*registry_args] + (["--repo", str(repo)] if repo else [])
    run_args = ["--max-batch", str(max_batch), "--concurrency", str(concurrency),
                "--threads", str(threads)]
    found = _list_inputs(inputs)
    # Workers run perch elsewhere: a model folder or repository is named whole.
    if repo:
        repo = os.path.abspath(repo)
    elif os.path.exists(model):
        model = os.path.abspath(model)

    workers = list(client.scheduler_info()["workers"])
    if not workers:
        raise PerchBatchError("the Dask cluster has no workers")
    # The registry token, if any, travels as data, never on a command line.
    token = os.environ.get("PERCH_TOKEN", "")
    prepared = client.run(_prepare_worker, perch, model, extra_args, token, on_error="return")
    identities = {}
    for worker, result in prepared.items():
        if isinstance(result, BaseException):
            raise PerchBatchError(f"cannot prepare --model {model} on worker {worker}: {result}")
        identities[worker] = result
    digests = {identity["model_digest"] for identity in identities.values()}
    if len(digests) != 1:
        raise PerchBatchError(f"the workers resolved --model {model} to different models "
                              f"({', '.join(sorted(digests))}); pin it by digest")
    identity = next(iter(identities.values()))
    folder = _open_output(output, identity)

    def submit(first_line, lines, key):
        return client.submit(_score_partition, perch, model, extra_args, token, run_args,
                             identity["model_digest"], lines, first_line, key=key, pure=False)
    submit.partition_lines = partition_lines
    in_flight = 4 * max(1, len(workers))

    files, partitions = [], 0
    for path in found:
        entry = {"input": str(path), "output": path.name, "skipped": False}
        finished = folder / path.name
        if finished.exists():
            entry["records"], entry["errors"] = _count(finished.read_bytes())
            entry["skipped"] = True
            log(f"{path.name}: finished by an earlier run, skipped")
        else:
            entry["records"], entry["errors"], parts = _score_file(
                client, path, folder, submit, in_flight)
            partitions += parts
        files.append(entry)
    summary = {
        "model": _model_json(identity),
        "files": files,
        "records": sum(f["records"] for f in files),
        "errors": sum(f["errors"] for f in files),
        "seconds": time.monotonic() - started,
        "dask": {"scheduler": client.scheduler.address, "workers": len(identities),
                 "partitions": partitions, "partition_lines": partition_lines},
    }
    _write_atomically(folder / SUCCESS_FILE, json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


# The task functions run where this package is not installed.
cloudpickle.register_pickle_by_value(sys.modules[__name__])
