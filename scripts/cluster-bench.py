#!/usr/bin/env python3
"""Across hosts against one host: lossless throughput and lossy latency of a
bus whose producer writes through one GlusterFS mount and whose consumer
reads through the other (scripts/cluster.sh up), beside the same bus on a
local disk directory. Prints a Markdown table (docs/across-hosts.md).

Lossless: bytes from a pipe into a producer, out of a consumer, checked
byte for byte; throughput from the producer's start to the consumer's exit.
Lossy: a producer gets one line at a time and the next goes out only once
the consumer has delivered the previous one; latency from the write into
the producer to the line coming out of the consumer.
"""

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def noise(n):
    out = bytearray()
    seed = b"filebus"
    while len(out) < n:
        seed = hashlib.sha256(seed).digest()
        out += seed * 64
    return bytes(out[:n])


def lossless(fb, bus_in, bus_out, interval, block, size):
    data = noise(size)
    args = ["--back-pressure", "--sleep-interval", interval, "--block-size", str(block)]
    start = time.monotonic()
    consumer = subprocess.Popen(
        [fb, "--filename", bus_out, *args, "consumer"], stdout=subprocess.PIPE
    )
    producer = subprocess.Popen(
        [fb, "--filename", bus_in, *args, "producer"], stdin=subprocess.PIPE
    )

    def feed():
        producer.stdin.write(data)
        producer.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    got = hashlib.sha256()
    count = 0
    while True:
        piece = consumer.stdout.read(1 << 20)
        if not piece:
            break
        got.update(piece)
        count += len(piece)
    feeder.join()
    if producer.wait() != 0 or consumer.wait() != 0:
        sys.exit("lossless run failed")
    seconds = time.monotonic() - start
    if count != size or got.digest() != hashlib.sha256(data).digest():
        sys.exit(f"lossless run delivered other bytes ({count} of {size})")
    chunks = -(-size // block)
    return size / seconds / (1 << 20), seconds / chunks * 1000


def lossy(fb, bus_in, bus_out, interval, ticks):
    common = ["--sleep-interval", interval]
    consumer = subprocess.Popen(
        [fb, "--filename", bus_out, *common, "consumer"], stdout=subprocess.PIPE
    )
    producer = subprocess.Popen(
        [fb, "--filename", bus_in, *common, "--lines", "producer"], stdin=subprocess.PIPE
    )
    latencies = []
    try:
        for i in range(ticks):
            line = f"tick {i}\n".encode()
            sent = time.monotonic()
            producer.stdin.write(line)
            producer.stdin.flush()
            if consumer.stdout.readline() != line:
                sys.exit(f"lossy run: tick {i} missing or out of order")
            latencies.append((time.monotonic() - sent) * 1000)
    finally:
        producer.stdin.close()
        producer.wait()
        consumer.kill()
        consumer.wait()
    latencies.sort()
    at = lambda q: latencies[int((len(latencies) - 1) * q)]
    return statistics.median(latencies), at(0.9), at(0.99)


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--filebus", default=os.path.join(root, "target/release/filebus"))
    p.add_argument("--a", default=os.environ.get("FILEBUS_CLUSTER_A", "/mnt/filebus-a"))
    p.add_argument("--b", default=os.environ.get("FILEBUS_CLUSTER_B", "/mnt/filebus-b"))
    p.add_argument("--local", default=os.path.join(root, "target"), help="a directory on a local disk")
    p.add_argument("--sleep-interval", default="0.01")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: proves it works, measures nothing")
    args = p.parse_args()

    small, large, ticks = (64 << 10, 4 << 20, 20) if args.smoke else (1 << 20, 64 << 20, 300)
    local_small, local_large = (small, large) if args.smoke else (64 << 20, 1 << 30)
    a_dir = tempfile.mkdtemp(prefix="filebus-bench-", dir=args.a)
    b_dir = os.path.join(args.b, os.path.basename(a_dir))
    local_dir = tempfile.mkdtemp(prefix="filebus-bench-", dir=args.local)
    iv = args.sleep_interval
    rows = []
    try:
        for place, bus_in, bus_out, sizes in [
            ("across the two mounts", os.path.join(a_dir, "{}"), os.path.join(b_dir, "{}"), (small, large)),
            ("local disk", os.path.join(local_dir, "{}"), os.path.join(local_dir, "{}"), (local_small, local_large)),
        ]:
            row = [place]
            for name, block, size in [("s", 4096, sizes[0]), ("l", 1 << 20, sizes[1])]:
                rate, per_chunk = lossless(args.filebus, bus_in.format(name), bus_out.format(name), iv, block, size)
                row.append(f"{rate:.2f} MiB/s ({per_chunk:.2f} ms/chunk)")
            p50, p90, p99 = lossy(args.filebus, bus_in.format("t"), bus_out.format("t"), iv, ticks)
            row.append(f"{p50:.1f} / {p90:.1f} / {p99:.1f} ms")
            rows.append(row)
    finally:
        shutil.rmtree(a_dir, ignore_errors=True)
        shutil.rmtree(local_dir, ignore_errors=True)

    print(f"`--sleep-interval {iv}`, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d')}"
          + (" (smoke run: tiny sizes, figures mean nothing)" if args.smoke else ""))
    print()
    print("| bus | lossless, 4 KiB blocks | lossless, 1 MiB blocks | lossy ticks p50 / p90 / p99 |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
