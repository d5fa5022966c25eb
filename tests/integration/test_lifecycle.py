"""Starting and stopping the agent: ports that are taken, prompt shutdown."""

import subprocess
import time

import grpc

from harness import PERCH_BIN


def test_a_second_agent_on_a_taken_port_refuses_to_start(module_servers):
    first = module_servers.start(["add_sub"])
    for taken in (["--http-port", str(first.port), "--grpc-port", "0"],
                  ["--http-port", "0", "--grpc-port", str(first.grpc_port)]):
        second = subprocess.run(
            [str(PERCH_BIN), "serve", "--repo", str(first.repo), *taken],
            capture_output=True, text=True, timeout=30)
        assert second.returncode == 1
        assert "cannot listen" in second.stderr
    assert first.get("/v2/health/ready").status_code == 200


def test_an_idle_grpc_client_does_not_delay_shutdown(servers):
    server = servers.start(["add_sub"])
    with grpc.insecure_channel(server.grpc_target) as channel:
        grpc.channel_ready_future(channel).result(timeout=10)
        started = time.monotonic()
        assert server.stop() == 0
        assert time.monotonic() - started < 3
