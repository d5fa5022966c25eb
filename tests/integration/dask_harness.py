"""A real Dask cluster on loopback for the `perch batch --dask` tests: one
dask-scheduler and dask-worker processes (no nanny, so a killed worker
stays dead), every process stopped with its fixture."""

import signal
import subprocess
from pathlib import Path

import pytest

from harness import free_port, wait_for

START_TIMEOUT = 60
STOP_TIMEOUT = 10


class DaskCluster:
    def __init__(self, workdir, workers=2):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self.worker_count = workers
        self.scheduler = None
        self.workers = {}  # name -> Popen
        self.client = None

    def _spawn(self, name, command):
        self.workdir.mkdir(parents=True, exist_ok=True)
        with open(self.workdir / f"{name}.log", "wb") as log:
            return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)

    def start(self):
        from distributed import Client

        self.scheduler = self._spawn("scheduler", [
            "dask-scheduler", "--host", "127.0.0.1", "--port", str(self.port),
            "--no-dashboard", "--no-show"])
        for index in range(1, self.worker_count + 1):
            name = f"worker{index}"
            self.workers[name] = self._spawn(name, [
                "dask-worker", self.address, "--host", "127.0.0.1", "--name", name,
                "--nthreads", "1", "--no-nanny", "--no-dashboard",
                "--local-directory", str(self.workdir / name)])
        try:
            self.client = Client(self.address, timeout=START_TIMEOUT)
            wait_for(lambda: len(self.client.scheduler_info()["workers"]) == self.worker_count,
                     START_TIMEOUT, what=self.logs)
        except BaseException:
            self.stop()
            raise
        return self

    def worker_address(self, name):
        for address, info in self.client.scheduler_info()["workers"].items():
            if info.get("name") == name:
                return address
        return None

    def kill_worker(self, name):
        process = self.workers[name]
        process.send_signal(signal.SIGKILL)
        process.wait(STOP_TIMEOUT)

    def logs(self):
        return "\n".join(f"--- {path.name}\n{path.read_text(errors='replace')[-3000:]}"
                         for path in sorted(self.workdir.glob("*.log")))

    def stop(self):
        if self.client is not None:
            self.client.close()
        for process in [*self.workers.values(), self.scheduler]:
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory):
    cluster = DaskCluster(tmp_path_factory.mktemp("dask")).start()
    yield cluster
    cluster.stop()
