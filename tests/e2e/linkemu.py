#!/usr/bin/env python3
"""A userspace link emulator for tests: bridges Ethernet frames between two interfaces
(run it in a namespace of its own holding both ends, with no addresses on them) and
delays and drops them on the way. This kernel has no `netem`; `tbf` does the rate cap.

    linkemu.py IF_A IF_B [--delay-ms D] [--loss P] [--seed S]

Frames from IF_A to IF_B (the server -> viewer direction) are delayed by D ms and dropped
with probability P (0..1, independent, seeded); IF_B -> IF_A passes at once. Frames keep
their GSO/checksum metadata (PACKET_VNET_HDR), so TCP's large segments cross intact. It
prints one line of counters when it gets SIGTERM, then exits.
"""

import argparse
import heapq
import random
import select
import signal
import socket
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_VNET_HDR = 15
PACKET_OUTGOING = 4
MAX_QUEUED = 20000


def open_port(ifname):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    s.setsockopt(SOL_PACKET, PACKET_VNET_HDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    s.bind((ifname, 0))
    s.setblocking(False)
    return s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--delay-ms", type=float, default=0.0)
    ap.add_argument("--loss", type=float, default=0.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    if not (0.0 <= args.loss < 1.0) or args.delay_ms < 0:
        sys.exit("linkemu: --loss must be in [0, 1) and --delay-ms >= 0")
    rng = random.Random(args.seed)
    a, b = open_port(args.a), open_port(args.b)
    delay = args.delay_ms / 1000.0
    queue = []  # (due, n, frame) for a -> b
    n = 0
    counts = {"a_to_b": 0, "dropped": 0, "b_to_a": 0, "overflow": 0}
    running = True

    def stop(*_):
        nonlocal running
        running = False

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"linkemu: {args.a} -> {args.b} delay {args.delay_ms} ms loss {args.loss}", flush=True)
    while running:
        now = time.monotonic()
        while queue and queue[0][0] <= now:
            _, _, frame = heapq.heappop(queue)
            try:
                b.send(frame)
            except OSError:
                pass
        timeout = max(0.0, queue[0][0] - now) if queue else 0.2
        try:
            ready, _, _ = select.select([a, b], [], [], timeout)
        except InterruptedError:
            continue
        for s in ready:
            while True:
                try:
                    frame, addr = s.recvfrom(70000)
                except (BlockingIOError, InterruptedError):
                    break
                if addr[2] == PACKET_OUTGOING:
                    continue  # our own send, seen on the way out
                if s is b:
                    counts["b_to_a"] += 1
                    try:
                        a.send(frame)
                    except OSError:
                        pass
                    continue
                counts["a_to_b"] += 1
                if args.loss and rng.random() < args.loss:
                    counts["dropped"] += 1
                    continue
                if len(queue) >= MAX_QUEUED:
                    counts["overflow"] += 1
                    continue
                n += 1
                heapq.heappush(queue, (time.monotonic() + delay, n, frame))
    print("linkemu: " + " ".join(f"{k}={v}" for k, v in counts.items()), flush=True)


if __name__ == "__main__":
    main()
