#!/usr/bin/env python3
"""Hostile and broken clients against vpngw's control socket.

Usage: hostile_clients.py SOCKET

Sends what a careless or malicious client would: garbage lines, a wrong
protocol version, unknown fields, invalid UTF-8, an oversized line, many
connections that stall mid-request, and a flood of connect/close. Between
the attacks, and while the stalled connections are held, a well-formed
request on a fresh connection must still be answered; then 50 clients at
once, ten requests each. Prints one JSON
object with what each attack got back; exits 1 if the daemon misbehaved.
"""
import json
import socket
import sys
import time

path = sys.argv[1]
report = {}
failed = []


def conn(timeout=10.0):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(path)
    return s


def lines(s, n):
    """Reads n reply lines."""
    buf = b""
    while buf.count(b"\n") < n:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [json.loads(l) for l in buf.split(b"\n") if l.strip()][:n]


def good(label):
    s = conn()
    s.sendall(b'{"version":1,"id":42,"request":"stats"}\n')
    r = lines(s, 1)
    s.close()
    ok = bool(r) and r[0].get("ok") is True and r[0].get("id") == 42
    report[label] = ok
    if not ok:
        failed.append(label)


# Garbage of several kinds on one connection: each line gets its refusal,
# and the connection stays usable.
s = conn()
bad = [
    b"garbage",
    b'{"version":1}',
    b'{"version":2,"request":"export"}',
    b'{"version":1,"request":"export","evil":1}',
    b'{"version":1,"request":{"apply":{"changes":[{"add":{"route":{"gateway":"gw1","prefix":"10.9.0.0/16","via":"inside","bogus":true}}}]}}}',
    b'{"version":1,"request":{"apply":{"changes":[{"add":{"route":{"gateway":"gw1","prefix":"10.9.0.0/99","via":"inside"}}}]}}}',
    b"\xff\xfe\xfd",
    b"[" * 10000,
]
s.sendall(b"\n".join(bad) + b"\n" + b'{"version":1,"id":7,"request":"stats"}\n')
replies = lines(s, len(bad) + 1)
s.close()
report["garbage"] = [(r.get("ok"), (r.get("error") or {}).get("kind")) for r in replies]
if len(replies) != len(bad) + 1 or any(r.get("ok") for r in replies[:-1]) or not replies[-1].get("ok"):
    failed.append("garbage")
good("after-garbage")

# An oversized line: refused, and that connection closed.
s = conn(30)
try:
    s.sendall(b"{" + b" " * (9 << 20))
except OSError:
    pass
try:
    r = lines(s, 1)
    report["oversized"] = (r[0].get("error") or {}).get("kind") if r else "closed"
except (OSError, ValueError):
    report["oversized"] = "closed"
s.close()
if report["oversized"] not in ("too-long", "closed"):
    failed.append("oversized")
good("after-oversized")

# Many clients that connect and stall mid-request; the daemon keeps
# answering others while they are held.
stalled = []
for _ in range(100):
    c = conn()
    c.sendall(b'{"version":1,"request":')
    stalled.append(c)
good("while-100-stalled")

# A flood of connections that open and close at once.
t0 = time.time()
for _ in range(500):
    c = conn()
    c.close()
report["flood_500_seconds"] = round(time.time() - t0, 3)
good("after-flood")
for c in stalled:
    c.close()
good("after-stalled-closed")

# Many well-behaved clients at once, each with several requests on its
# connection: every one answered, in order.
import threading

answered = []


def polite(n):
    try:
        c = conn()
        for k in range(10):
            c.sendall(b'{"version":1,"id":%d,"request":"stats"}\n' % (n * 100 + k))
            r = lines(c, 1)
            if not (r and r[0].get("ok") and r[0].get("id") == n * 100 + k):
                return
        c.close()
        answered.append(n)
    except OSError:
        pass


threads = [threading.Thread(target=polite, args=(n,)) for n in range(50)]
for t in threads:
    t.start()
for t in threads:
    t.join()
report["concurrent_clients_answered"] = len(answered)
if len(answered) != 50:
    failed.append("concurrent")

report["failed"] = failed
print(json.dumps(report))
sys.exit(1 if failed else 0)
