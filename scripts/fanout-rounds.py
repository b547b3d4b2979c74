#!/usr/bin/env python3
"""Fan-out throughput of filebus binaries in interleaved rounds, for
comparing builds: bench.py's fan-out harness (one producer fed from this
process, N consumers whose pipes one thread drains) at a larger size than
the benchmark's 64 MiB, whose runs last ~60 ms and move by tens of percent.

    python3 scripts/fanout-rounds.py [--mib 256] [--rounds 3] [--runs 3]
        [--dir /dev/shm] [--consumers 1 32] EXE...

Prints one line per binary, consumer count and round: each run's MB/s.
"""
import argparse
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench  # noqa: E402


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("exes", nargs="+")
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="/dev/shm")
    parser.add_argument("--consumers", type=int, nargs="+", default=[1, 32])
    args = parser.parse_args()
    exes = [os.path.abspath(exe) for exe in args.exes]
    for r in range(args.rounds):
        for count in args.consumers:
            for exe in exes:
                rates = []
                for _ in range(args.runs):
                    busdir = os.path.join(os.path.abspath(args.dir),
                                          f"fanout-rounds-{os.getpid()}")
                    shutil.rmtree(busdir, ignore_errors=True)
                    pipeline = bench.Pipeline(bench.Impl("filebus", exe), busdir, False,
                                              consumers=count)
                    # Every consumer has started before the stream does.
                    time.sleep(0.3)
                    try:
                        rates.append(bench.fanout_throughput(pipeline, args.mib * bench.MiB, 600))
                    finally:
                        shutil.rmtree(busdir, ignore_errors=True)
                print(f"round {r + 1} {exe} x{count}: "
                      + " ".join(f"{rate / 1e6:.0f}" for rate in rates) + " MB/s", flush=True)


if __name__ == "__main__":
    main()
