"""python3 -m perch_dask: what `perch batch --dask` runs."""

import argparse
import sys

from . import PerchBatchError, run_batch


def main(argv=None):
    parser = argparse.ArgumentParser(prog="perch batch --dask",
                                     description="Run perch batch on a Dask cluster.")
    parser.add_argument("--scheduler", required=True, help="tcp://HOST:8786")
    parser.add_argument("--model", required=True)
    parser.add_argument("--input", action="append", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--perch", default="perch", help="perch on the workers")
    parser.add_argument("--repo")
    parser.add_argument("--partition-lines", type=int, default=256)
    parser.add_argument("--max-batch", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--timeout", type=int, default=60)
    parser.add_argument("--insecure", action="store_true")
    parser.add_argument("--ca-file")
    args = parser.parse_args(argv)

    registry_args = ["--timeout", str(args.timeout)]
    if args.insecure:
        registry_args.append("--insecure")
    if args.ca_file:
        registry_args += ["--ca-file", args.ca_file]
    try:
        from distributed import Client
    except ImportError as error:
        print(f"error: the Dask runner needs python3-distributed ({error})", file=sys.stderr)
        return 1
    try:
        with Client(args.scheduler, timeout=args.timeout) as client:
            summary = run_batch(client, args.model, args.input, args.output, perch=args.perch,
                                partition_lines=args.partition_lines,
                                max_batch=args.max_batch, concurrency=args.concurrency,
                                threads=args.threads, registry_args=registry_args,
                                repo=args.repo)
    except PerchBatchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"error: cannot reach the Dask scheduler {args.scheduler}: {error}",
              file=sys.stderr)
        return 1
    print(f"{summary['records']} records ({summary['errors']} errors) from "
          f"{len(summary['files'])} files in {summary['seconds']:.2f} s on "
          f"{summary['dask']['workers']} workers: {args.output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
