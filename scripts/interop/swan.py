#!/usr/bin/env python3
"""Drive strongSwan (charon with kernel-libipsec, userspace ESP) as an
independent IKEv2 peer in one network namespace of the lab.

Each charon lives in a directory of its own (its strongswan.conf, vici
socket, swanctl.conf, log and pid file) and a namespace of its own, started
as ../shared/docs/LAB.md shows: charon run directly, with a private tmpfs on
/run, loading an explicit plugin list.

  swan.py start --ns NS --dir DIR [--forward]   start charon, wait for vici
  swan.py load --dir DIR --name N --local A --remote A --psk S \\
          --local-ts CIDR --remote-ts CIDR [options]   (re)place the one
          connection charon knows, and its PSK
  swan.py initiate --dir DIR --name N [--timeout S]
  swan.py terminate --dir DIR --name N
  swan.py sas --dir DIR [--json]                the IKE and child SAs
  swan.py stop --dir DIR [--kill9]

`sas --json` prints a list of IKE SAs: {name, state, initiator_spi,
responder_spi, local_host,
local_port, remote_host, remote_port, encr_alg, encr_keysize, integ_alg,
prf_alg, dh_group, established, rekey_time, children: [{name, state,
protocol, encap (bool), spi_in, spi_out (hex), encr_alg, encr_keysize,
integ_alg, bytes_in, bytes_out, packets_in, packets_out, local_ts,
remote_ts, rekey_time, life_time}]}, from `swanctl --list-sas --raw`.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time

CHARON = "/usr/lib/ipsec/charon"
PLUGINS = ("random nonce openssl aes sha1 sha2 hmac gcm chapoly curve25519 x509 pem pkcs1 kdf "
           "kernel-libipsec kernel-netlink socket-default vici updown")


def conf(d):
    return os.path.join(d, "strongswan.conf")


def swanctl(d, *args, check=True, timeout=60):
    env = dict(os.environ, STRONGSWAN_CONF=conf(d))
    r = subprocess.run(["swanctl", *args], env=env, capture_output=True, text=True, timeout=timeout)
    if check and r.returncode != 0:
        sys.exit(f"swanctl {' '.join(args)}: {r.stdout}{r.stderr}")
    return r


def start(a):
    d = os.path.abspath(a.dir)
    os.makedirs(d, exist_ok=True)
    log_keys = "      chd = 4\n" if a.log_keys else ""
    with open(conf(d), "w") as f:
        f.write(f"""charon {{
  load_modular = no
  load = {PLUGINS}
  install_routes = yes
  plugins {{
    vici {{
      socket = unix://{d}/charon.vici
    }}
  }}
  filelog {{
    log {{
      path = {d}/charon.log
      time_format = %H:%M:%S
      flush_line = yes
      default = 1
      ike = 2
      cfg = 2
      knl = 1
{log_keys}    }}
  }}
}}
swanctl {{
  socket = unix://{d}/charon.vici
}}
""")
    if a.forward:
        for key in ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"]:
            subprocess.run(["ip", "netns", "exec", a.ns, "sysctl", "-qw", key], check=True)
    out = open(os.path.join(d, "charon.out"), "w")
    p = subprocess.Popen(
        ["ip", "netns", "exec", a.ns, "env", f"STRONGSWAN_CONF={conf(d)}", "sh", "-c",
         f"mount -t tmpfs tmpfs /run && exec {CHARON}"],
        stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    with open(os.path.join(d, "charon.pid"), "w") as f:
        f.write(str(p.pid))
    for _ in range(100):
        if p.poll() is not None:
            sys.exit(f"charon exited ({p.returncode}): {open(os.path.join(d, 'charon.out')).read()}")
        if swanctl(d, "--stats", check=False, timeout=5).returncode == 0:
            print(p.pid)
            return
        time.sleep(0.1)
    sys.exit("charon's vici socket did not answer within 10 s")


def load(a):
    d = os.path.abspath(a.dir)
    ike = [f"    version = 2", f"    local_addrs = {a.local}", f"    remote_addrs = {a.remote}"]
    if a.ike_proposals:
        ike.append(f"    proposals = {a.ike_proposals}")
    for key, v in [("rekey_time", a.ike_rekey_time), ("dpd_delay", a.dpd_delay), ("dpd_timeout", a.dpd_timeout)]:
        if v is not None:
            ike.append(f"    {key} = {v}s")
    if a.ike_rekey_time is not None:
        # Rekeyed when due, not deleted: a life well beyond the rekey time.
        ike.extend(["    rand_time = 0s", f"    over_time = {3 * a.ike_rekey_time}s"])
    child = [f"        local_ts = {a.local_ts}", f"        remote_ts = {a.remote_ts}",
             f"        start_action = {a.start_action}"]
    if a.esp_proposals:
        child.append(f"        esp_proposals = {a.esp_proposals}")
    for key, v in [("rekey_time", a.rekey_time), ("life_time", a.life_time)]:
        if v is not None:
            child.append(f"        {key} = {v}s")
    if a.rekey_time is not None:
        # No jitter: a test's short rekey time is when the rekey comes.
        child.append("        rand_time = 0s")
    if a.dpd_action:
        child.append(f"        dpd_action = {a.dpd_action}")
    local_id, remote_id = a.local_id or a.local, a.remote_id or a.remote
    text = "connections {\n  %s {\n%s\n    local {\n      auth = psk\n      id = %s\n    }\n" \
           "    remote {\n      auth = psk\n      id = %s\n    }\n    children {\n      %s {\n%s\n      }\n" \
           "    }\n  }\n}\nsecrets {\n  ike-%s {\n    id-1 = %s\n    id-2 = %s\n    secret = \"%s\"\n  }\n}\n" % (
               a.name, "\n".join(ike), local_id, remote_id, a.name, "\n".join(child), a.name, local_id, remote_id,
               a.psk.replace('"', '\\"'))
    path = os.path.join(d, "swanctl.conf")
    with open(path, "w") as f:
        f.write(text)
    # Only this connection and its secret: what was loaded before goes.
    swanctl(d, "--load-creds", "--clear", "--noprompt", "--file", path)
    swanctl(d, "--load-conns", "--file", path)


def initiate(a):
    r = swanctl(a.dir, "--initiate", "--ike", a.name, "--child", a.name, "--timeout", str(a.timeout),
                check=False, timeout=a.timeout + 10)
    print(r.stdout + r.stderr)
    sys.exit(r.returncode)


def terminate(a):
    r = swanctl(a.dir, "--terminate", "--ike", a.name, "--force", "--timeout", "5", check=False)
    print(r.stdout + r.stderr)


def parse_raw(text):
    """vici's raw form: `name {`, `}`, `key=value`, `key [`, `item`, `]`."""
    tokens = re.findall(r"[^\s{}\[\]=]+=[^\s{}\[\]]*|[{}\[\]]|[^\s{}\[\]=]+", text)
    pos = 0

    def section():
        nonlocal pos
        out = {}
        while pos < len(tokens) and tokens[pos] != "}":
            t = tokens[pos]
            pos += 1
            if "=" in t:
                k, v = t.split("=", 1)
                out[k] = v
            elif pos < len(tokens) and tokens[pos] == "{":
                pos += 1
                out[t] = section()
                pos += 1
            elif pos < len(tokens) and tokens[pos] == "[":
                pos += 1
                items = []
                while tokens[pos] != "]":
                    items.append(tokens[pos])
                    pos += 1
                pos += 1
                out[t] = items
        return out

    events = []
    while pos < len(tokens):
        if tokens[pos] == "{":
            pos += 1
            events.append(section())
            pos += 1
        else:
            pos += 1
    return events


def sas(a):
    r = swanctl(a.dir, "--list-sas", "--raw")
    result = []
    for event in parse_raw(r.stdout):
        for name, ike in event.items():
            entry = {"name": name}
            for k in ["state", "initiator-spi", "responder-spi", "local-host", "local-port", "remote-host", "remote-port", "encr-alg",
                      "encr-keysize", "integ-alg", "prf-alg", "dh-group", "established", "rekey-time"]:
                entry[k.replace("-", "_")] = ike.get(k)
            children = []
            for cname, c in (ike.get("child-sas") or {}).items():
                child = {"name": cname, "encap": c.get("encap") == "yes"}
                for k in ["state", "protocol", "spi-in", "spi-out", "encr-alg", "encr-keysize", "integ-alg",
                          "bytes-in", "bytes-out", "packets-in", "packets-out", "local-ts", "remote-ts",
                          "rekey-time", "life-time"]:
                    child[k.replace("-", "_")] = c.get(k)
                children.append(child)
            entry["children"] = children
            result.append(entry)
    if a.json:
        print(json.dumps(result, indent=1))
    else:
        print(r.stdout)


def stop(a):
    path = os.path.join(a.dir, "charon.pid")
    try:
        pid = int(open(path).read())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGKILL if a.kill9 else signal.SIGTERM)
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    os.remove(path)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("start", help="start charon in a namespace")
    s.add_argument("--ns", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--forward", action="store_true", help="let the namespace forward (charon's ipsec0 to the LAN)")
    s.add_argument("--log-keys", action="store_true", help="log the negotiated ESP keys (chd = 4)")
    s.set_defaults(run=start)
    s = sub.add_parser("load", help="load the one connection (replacing any before)")
    s.add_argument("--dir", required=True)
    s.add_argument("--name", required=True)
    for arg in ["--local", "--remote", "--psk", "--local-ts", "--remote-ts"]:
        s.add_argument(arg, required=True)
    for arg in ["--local-id", "--remote-id", "--ike-proposals", "--esp-proposals", "--dpd-action"]:
        s.add_argument(arg)
    for arg in ["--rekey-time", "--life-time", "--ike-rekey-time", "--dpd-delay", "--dpd-timeout"]:
        s.add_argument(arg, type=int, help="seconds")
    s.add_argument("--start-action", default="none", choices=["none", "start", "trap"])
    s.set_defaults(run=load)
    s = sub.add_parser("initiate", help="initiate the connection; the exit status says whether it came up")
    s.add_argument("--dir", required=True)
    s.add_argument("--name", required=True)
    s.add_argument("--timeout", type=int, default=10)
    s.set_defaults(run=initiate)
    s = sub.add_parser("terminate", help="delete the connection's IKE SA")
    s.add_argument("--dir", required=True)
    s.add_argument("--name", required=True)
    s.set_defaults(run=terminate)
    s = sub.add_parser("sas", help="list the SAs")
    s.add_argument("--dir", required=True)
    s.add_argument("--json", action="store_true")
    s.set_defaults(run=sas)
    s = sub.add_parser("stop", help="stop charon")
    s.add_argument("--dir", required=True)
    s.add_argument("--kill9", action="store_true", help="SIGKILL at once (a dead peer)")
    s.set_defaults(run=stop)
    a = p.parse_args()
    a.run(a)


if __name__ == "__main__":
    main()
