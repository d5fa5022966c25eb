#!/usr/bin/python3
"""MQTT request -> answer p50, two perch builds and mqtt_echo interleaved:
short slices A, B, echo, then again (the order rotates every pair), so that
the machine's drift moves all three alike. Reports the median of the
per-pair ratios with their spread; writes nothing to RESULTS.md.

    /usr/bin/python3 bench/mqtt/abab.py --baseline OLD/perch --perch build/perch

Each slice is --seconds of one-at-a-time exchanges (after --warmup s) with
the same request, client and broker as bench/mqtt/run.py part a (QoS 1,
Response Topic + Correlation Data, model identity_fp32 FP32 [1,256]). Both
agents run throughout on their own --state, with perch's defaults
(--outbox-sync full); mqtt_echo is started afresh for each of its slices.
"""

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # noqa: E402  (the MQTT benchmark's pieces)
from mqtt_harness import Broker, Client, unique  # noqa: E402

WORK = bench.WORK.parent / "mqtt-abab"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--perch", default=str(bench.ROOT / "build" / "perch"))
    parser.add_argument("--baseline", required=True,
                        help="the perch binary to compare against")
    parser.add_argument("--pairs", type=int, default=12)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--warmup", type=float, default=0.3)
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    (WORK / "logs").mkdir(parents=True)
    bench.WORK = WORK
    echo_binary = bench.build_echo()
    repo = bench.model_repo()
    payload = bench.request_body()
    binaries = {"A": WORK / "perch-a", "B": WORK / "perch-b"}
    shutil.copy2(args.baseline, binaries["A"])
    shutil.copy2(args.perch, binaries["B"])

    broker = Broker(WORK / "broker", persistence=True,
                    extra=["set_tcp_nodelay true"]).start()
    agents = []
    try:
        topics = {}
        for side, binary in binaries.items():
            device = f"abab{side.lower()}"
            agent = bench.Agent(binary, repo, broker.url, device,
                                WORK / "state" / device, WORK / "logs").start()
            agents.append(agent)
            agent.wait_metric("perch_mqtt_connected", 1, 20)
            topics[side] = f"perch/{bench.LOCATION}/{device}/infer/{bench.MODEL}"
        client = Client(broker.port).connect()
        reply = unique(f"{bench.LOCATION}/abab/")
        client.subscribe(reply)
        client.publish(topics["B"], payload, response_topic=reply,
                       correlation=b"probe")
        answer = client.next(10).payload
        assert b'"outputs"' in answer, answer
        answer_file = WORK / "answer.json"
        answer_file.write_bytes(answer)
        echo = bench.EchoSide(echo_binary, broker.port, answer_file, "echo",
                              True)

        def slice_p50(side):
            with (echo if side == "echo" else bench.Always(topics[side])) \
                    as topic:
                bench.round_trips(client, topic, payload, 10**6, reply,
                                  args.warmup)
                return bench.p50_ms(bench.round_trips(
                    client, topic, payload, 10**6, reply, args.seconds))

        sides = ["A", "B", "echo"]
        runs = {side: [] for side in sides}
        for pair in range(args.pairs):
            order = sides[pair % 3:] + sides[:pair % 3]
            busy = bench.busy_fraction(0.2)
            for side in order:
                runs[side].append(slice_p50(side))
            bench.log(f"pair {pair + 1}: A {runs['A'][-1]:.3f} ms, "
                      f"B {runs['B'][-1]:.3f} ms, echo "
                      f"{runs['echo'][-1]:.3f} ms (machine {busy:.0%} busy "
                      f"before)")
        client.close()
    finally:
        for agent in agents:
            agent.stop()
        broker.stop()

    def ratios(top, bottom):
        values = sorted(t / b for t, b in zip(runs[top], runs[bottom]))
        return (f"median {statistics.median(values):.2f}x "
                f"(pairs {values[0]:.2f}-{values[-1]:.2f}x, quartiles "
                f"{values[len(values) // 4]:.2f}-"
                f"{values[(3 * len(values)) // 4]:.2f}x)")

    print(f"p50 ms, median of {args.pairs} slices of {args.seconds:g} s: "
          f"A (baseline) {statistics.median(runs['A']):.3f}, B (perch) "
          f"{statistics.median(runs['B']):.3f}, mqtt_echo "
          f"{statistics.median(runs['echo']):.3f}")
    print(f"B / A:    {ratios('B', 'A')}")
    print(f"B / echo: {ratios('B', 'echo')}")
    print(f"A / echo: {ratios('A', 'echo')}")


if __name__ == "__main__":
    main()
