#!/usr/bin/env python3
"""A paced UDP flow with sequence numbers, and a sink that records what
arrives: the lab's measure of failover (which sink, and when) and of the
bandwidth limit (bytes through), independent of vpngw's own counters.

  udp_flow.py send DST PORT --pps N --seconds S [--size BYTES]
      Sends N datagrams a second for S seconds (IP packets of BYTES bytes,
      default 200), each carrying its sequence number and send time; prints
      {"sent": n} as JSON when done.
  udp_flow.py sink PORT --seconds S --out FILE
      Receives for S seconds, then writes FILE: {"count", "ip_bytes",
      "first", "last", "arrivals": [[seq, time], ...]} (times in seconds
      since 1970, one clock for every namespace of the host).
"""
import argparse
import json
import socket
import struct
import sys
import time

HEADERS = 28  # IPv4 + UDP


def send(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    pad = b"\0" * max(0, a.size - HEADERS - 16)
    start, seq = time.time(), 0
    total = int(a.pps * a.seconds)
    while seq < total:
        due = start + seq / a.pps
        now = time.time()
        if now < due:
            time.sleep(min(due - now, 0.002))
            continue
        # Behind schedule: send what is due at once (the rate holds on average).
        while seq < total and start + seq / a.pps <= now:
            s.sendto(struct.pack("!Qd", seq, time.time()) + pad, (a.dst, a.port))
            seq += 1
    print(json.dumps({"sent": seq}))


def sink(a):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", a.port))
    s.settimeout(0.2)
    end = time.time() + a.seconds
    arrivals, ip_bytes = [], 0
    while time.time() < end:
        try:
            data = s.recv(65535)
        except socket.timeout:
            continue
        if len(data) >= 16:
            seq, _ = struct.unpack("!Qd", data[:16])
            arrivals.append([seq, time.time()])
            ip_bytes += len(data) + HEADERS
    out = {
        "count": len(arrivals),
        "ip_bytes": ip_bytes,
        "first": arrivals[0][1] if arrivals else None,
        "last": arrivals[-1][1] if arrivals else None,
        "arrivals": arrivals,
    }
    with open(a.out, "w") as f:
        json.dump(out, f)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("send")
    s.add_argument("dst")
    s.add_argument("port", type=int)
    s.add_argument("--pps", type=float, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--size", type=int, default=200)
    k = sub.add_parser("sink")
    k.add_argument("port", type=int)
    k.add_argument("--seconds", type=float, required=True)
    k.add_argument("--out", required=True)
    a = p.parse_args()
    (send if a.mode == "send" else sink)(a)


if __name__ == "__main__":
    sys.exit(main())
