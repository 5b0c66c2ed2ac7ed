#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""A customer gateway made of Scapy: an independent ESP peer for vpngw.

Runs in the customer gateway namespace of the lab (``scripts/lab.sh``,
PREFIX-cgw) in place of a second vpngw, and carries the tunnel with Scapy's
``SecurityAssociation`` (RFC 4303 tunnel mode, optionally in UDP 4500, RFC
3948):

* ESP from the cloud gateway (192.0.2.1) arriving on ``cgw-out`` is decrypted
  with the inbound SA (SPI 0x1001): the ICV is checked (Scapy raises on
  tamper), then the padding (RFC 4303 2.4: 1, 2, 3, ...), the next header,
  the inner packet's length, an anti-replay window (RFC 4303 appendix A) and
  the tunnel's selectors (cloud network to IDC network); the inner packet
  (TTL decremented, RFC 6040 CE carried inwards) goes out of ``cgw-in`` in
  an Ethernet frame to the IDC host.
* IPv4 from the IDC network to the cloud network arriving on ``cgw-in`` is
  encrypted with the outbound SA (SPI 0x2001, sequence numbers from 1; outer
  DSCP/ECN and DF copied from the inner header) and sent out of ``cgw-out``
  to the internet router.

The kernel of the namespace does not forward (ip_forward=0, checked), and is
kept from answering the tunnel: a raw IPPROTO_ESP socket and a UDP socket on
port 4500 (both with a drop-everything socket filter) take ESP and ESP-in-UDP
to the local address, so the kernel sends no ICMP protocol or port
unreachable for them (with forwarding off it sends no ICMP for the packets it
cannot forward either). The summary reports the kernel's ICMP destination
unreachable count over the run (from /proc/net/snmp), which must stay 0.

Output: one line per packet handled (``decrypt``/``encrypt``/``drop`` with
the SPI and sequence number), ``ready`` once the sockets are open and the
neighbours resolved (also written to --ready-file), and on SIGTERM or SIGINT
``summary {json}`` (counts of packets and inner bytes each way, drops by
reason, the encapsulations seen, keepalives, the kernel's ICMP count).

Exit status: 0 when nothing was refused; 3 at once on a decryption failure
(ICV, padding, next header, wrong SPI or encapsulation, malformed packet)
with the packet's bytes and Scapy's error on stderr, unless --keep-going
(then they are counted and the status is 1 at the end); 1 at the end when
any packet was refused (replay, selector, TTL) or the kernel sent ICMP
unreachables; 2 on a usage or setup error.

Usage (lab defaults: AES-GCM-128 and the keys of scripts/lab/gw.toml):
  ip netns exec vpngw-lab-cgw python3 scripts/interop/scapy_cgw.py [--natt]
  ... --suite chacha20-poly1305 --in-key <72 hex digits> --out-key <72 hex digits>
"""

import argparse
import ctypes
import ipaddress
import json
import select
import signal
import socket
import struct
import subprocess
import sys
import time

from scapy.config import conf
from scapy.layers.inet import IP, UDP
from scapy.layers.ipsec import ESP, IPSecIntegrityError, SecurityAssociation
from scapy.layers.l2 import ARP, Ether
from scapy.arch import get_if_addr, get_if_hwaddr
from scapy.sendrecv import srp1

# suite -> (Scapy crypt_algo, key length without the 4-byte salt)
SUITES = {
    "aes-gcm-128": ("AES-GCM", 16),
    "aes-gcm-256": ("AES-GCM", 32),
    "chacha20-poly1305": ("CHACHA20-POLY1305", 32),
}
ICV_LEN = 16
NATT_PORT = 4500
ETH_P_IP = 0x0800

# The failures that mean "the peer sent something we cannot accept as ESP
# from it": abort at once (exit 3) unless --keep-going.
FATAL = {"icv", "padding", "next-header", "unknown-spi", "encap-mismatch", "malformed", "fragment", "seq-zero"}


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--natt", action="store_true", help="ESP in UDP 4500 (RFC 3948) both ways")
    p.add_argument("--suite", choices=sorted(SUITES), default="aes-gcm-128")
    p.add_argument("--in-spi", type=lambda s: int(s, 0), default=0x1001, help="SPI of the SA we decrypt with")
    p.add_argument("--in-key", default="0102030405060708090a0b0c0d0e0f1011121314",
                   help="its key || 4-byte salt, hex")
    p.add_argument("--out-spi", type=lambda s: int(s, 0), default=0x2001, help="SPI of the SA we encrypt with")
    p.add_argument("--out-key", default="a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4",
                   help="its key || 4-byte salt, hex")
    p.add_argument("--local", default="198.51.100.1", help="our outside (tunnel) address")
    p.add_argument("--peer", default="192.0.2.1", help="the cloud gateway's outside address")
    p.add_argument("--router", default="198.51.100.254", help="next hop towards the peer")
    p.add_argument("--host", default="172.16.1.9", help="the IDC host: next hop of decrypted packets")
    p.add_argument("--outside", default="cgw-out", help="interface towards the internet")
    p.add_argument("--inside", default="cgw-in", help="interface towards the IDC")
    p.add_argument("--local-net", default="172.16.1.0/24", help="the IDC network (our side of the tunnel)")
    p.add_argument("--remote-net", default="10.1.0.0/16", help="the cloud network (the peer's side)")
    p.add_argument("--replay-window", type=int, default=64, help="anti-replay window in packets")
    p.add_argument("--ready-file", help="write 'ready' here once packets are handled")
    p.add_argument("--keep-going", action="store_true", help="count decryption failures instead of exiting")
    p.add_argument("--resolve-timeout", type=float, default=10.0, help="seconds to resolve the router and host")
    a = p.parse_args(argv)
    algo, key_len = SUITES[a.suite]
    for name in ("in_key", "out_key"):
        try:
            key = bytes.fromhex(getattr(a, name))
        except ValueError:
            p.error(f"--{name.replace('_', '-')}: not hex")
        if len(key) != key_len + 4:
            p.error(f"--{name.replace('_', '-')}: {a.suite} takes {key_len} key bytes and a 4-byte salt "
                    f"({2 * (key_len + 4)} hex digits), not {len(key)} bytes")
        setattr(a, name, key)
    a.algo = algo
    a.local_net = ipaddress.ip_network(a.local_net)
    a.remote_net = ipaddress.ip_network(a.remote_net)
    if a.replay_window < 1:
        p.error("--replay-window must be at least 1")
    return a


class ReplayWindow:
    """RFC 4303 appendix A (32-bit sequence numbers): bit i of ``bits`` says
    whether ``top - i`` has been accepted."""

    def __init__(self, size):
        self.size = size
        self.top = 0
        self.bits = 0

    def check(self, seq):
        if seq > self.top:
            return True
        off = self.top - seq
        return off < self.size and not (self.bits >> off) & 1

    def update(self, seq):
        if seq > self.top:
            self.bits = ((self.bits << (seq - self.top)) | 1) & ((1 << self.size) - 1)
            self.top = seq
        else:
            self.bits |= 1 << (self.top - seq)


def drop_all_filter(sock):
    """Attaches a one-instruction classic BPF program (ret 0) to ``sock``:
    the kernel delivers to it, so it does not answer, and it queues nothing."""
    insn = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0))  # BPF_RET | BPF_K, 0
    fprog = struct.pack("HL", 1, ctypes.addressof(insn))
    sock.setsockopt(socket.SOL_SOCKET, 26, fprog)  # SO_ATTACH_FILTER


def kernel_guards(local):
    """Sockets that make the kernel take ESP and UDP 4500 to ``local``
    silently (no ICMP protocol/port unreachable)."""
    esp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ESP)
    drop_all_filter(esp)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    drop_all_filter(udp)
    try:
        udp.bind((local, NATT_PORT))
    except OSError as e:
        die(f"cannot bind UDP {local}:{NATT_PORT} to keep the kernel quiet: {e}")
    return [esp, udp]


def icmp_unreachables():
    """The namespace's Icmp OutDestUnreachs (/proc/net/snmp)."""
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Icmp:")]
    return int(dict(zip(rows[0][1:], rows[1][1:]))["OutDestUnreachs"])


def resolve(ip, iface, timeout):
    """The MAC address of ``ip`` on ``iface``: an ARP request from Scapy,
    retried; failing that, the kernel's neighbour table."""
    mine, my_ip = get_if_hwaddr(iface), get_if_addr(iface)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        req = Ether(dst="ff:ff:ff:ff:ff:ff", src=mine) / ARP(op=1, hwsrc=mine, psrc=my_ip, pdst=ip)
        ans = srp1(req, iface=iface, timeout=0.5, verbose=0)
        if ans is not None and ARP in ans and ans[ARP].psrc == ip:
            return ans[ARP].hwsrc
        neigh = subprocess.run(["ip", "neigh", "show", ip, "dev", iface], capture_output=True, text=True).stdout
        words = neigh.split()
        if "lladdr" in words:
            return words[words.index("lladdr") + 1]
    die(f"{ip} on {iface} did not answer ARP within {timeout} s")


def fix_ip_checksum(pkt):
    """Recomputes the IPv4 header checksum of ``pkt`` (a bytearray) in place."""
    ihl = (pkt[0] & 0x0F) * 4
    pkt[10:12] = b"\0\0"
    s = sum(struct.unpack(f"!{ihl // 2}H", bytes(pkt[:ihl])))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    pkt[10:12] = struct.pack("!H", ~s & 0xFFFF)


def die(msg):
    print(f"scapy_cgw: {msg}", file=sys.stderr, flush=True)
    sys.exit(2)


class Gateway:
    def __init__(self, a):
        self.a = a
        self.sa_in = SecurityAssociation(ESP, spi=a.in_spi, crypt_algo=a.algo, crypt_key=a.in_key,
                                         tunnel_header=IP(src=a.peer, dst=a.local),
                                         nat_t_header=UDP(sport=NATT_PORT, dport=NATT_PORT) if a.natt else None)
        # Sequence numbers from 1 (the first encrypt() uses seq_num, then
        # increments it).
        self.sa_out = SecurityAssociation(ESP, spi=a.out_spi, seq_num=1, crypt_algo=a.algo, crypt_key=a.out_key,
                                          tunnel_header=IP(src=a.local, dst=a.peer),
                                          nat_t_header=UDP(sport=NATT_PORT, dport=NATT_PORT) if a.natt else None)
        self.window = ReplayWindow(a.replay_window)
        self.stats = {
            "decrypted": 0, "decrypted_bytes": 0, "encrypted": 0, "encrypted_bytes": 0,
            "encap": {"esp": 0, "udp": 0}, "keepalives": 0, "non_esp": 0, "drops": {},
        }
        self.failed = None  # the first fatal failure, for the exit status

    def drop(self, reason, what, raw=None, error=None):
        self.stats["drops"][reason] = self.stats["drops"].get(reason, 0) + 1
        print(f"drop {reason} {what}", flush=True)
        if reason in FATAL:
            detail = f"scapy_cgw: FAILED {reason}: {what}"
            if error is not None:
                said = str(error) or ("the ICV does not match" if reason == "icv" else "(no message)")
                detail += f": Scapy says {type(error).__name__}: {said}"
            if raw is not None:
                detail += f"\n  packet ({len(raw)} bytes): {raw.hex()}"
            print(detail, file=sys.stderr, flush=True)
            self.failed = self.failed or reason
            if not self.a.keep_going:
                raise Fatal(reason)

    def open(self):
        a = self.a
        forwarding = open("/proc/sys/net/ipv4/ip_forward").read().strip()
        if forwarding != "0":
            die("the kernel forwards here (net.ipv4.ip_forward=1): it would carry "
                             "the IDC's traffic in the clear; run in the lab's cgw namespace")
        self.guards = kernel_guards(a.local)
        self.icmp_start = icmp_unreachables()
        self.out_mac, self.in_mac = get_if_hwaddr(a.outside), get_if_hwaddr(a.inside)
        self.router_mac = resolve(a.router, a.outside, a.resolve_timeout)
        self.host_mac = resolve(a.host, a.inside, a.resolve_timeout)
        outside_filter = (f"ip src host {a.peer} and ip dst host {a.local} "
                          f"and (ip proto 50 or udp dst port {NATT_PORT})")
        inside_filter = f"ip src net {a.local_net} and ip dst net {a.remote_net}"
        self.outside = conf.L2socket(iface=a.outside, filter=outside_filter, promisc=False)
        self.inside = conf.L2socket(iface=a.inside, filter=inside_filter, promisc=False)
        print(f"router {a.router} is {self.router_mac} on {a.outside}; host {a.host} is {self.host_mac} "
              f"on {a.inside}", flush=True)

    # ---- outside -> inside: decrypt ------------------------------------

    def from_outside(self, frame):
        a = self.a
        if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
            return
        ihl = (frame[14] & 0x0F) * 4
        total = struct.unpack("!H", frame[16:18])[0]
        outer = frame[14:14 + total]
        if len(outer) != total or ihl < 20:
            return self.drop("malformed", f"outer IPv4 of {len(frame) - 14} bytes says {total}", frame)
        if struct.unpack("!H", outer[6:8])[0] & 0x3FFF:
            return self.drop("fragment", "an outer fragment (the peer should fragment before encrypting)", outer)
        proto = outer[9]
        if proto == 17:
            payload = outer[ihl + 8:]
            sport, dport = struct.unpack("!HH", outer[ihl:ihl + 4])
            if len(payload) == 1 and payload[0] == 0xFF:
                self.stats["keepalives"] += 1
                print(f"keepalive {a.peer}:{sport}", flush=True)
                return
            if payload[:4] == b"\0\0\0\0":
                self.stats["non_esp"] += 1
                print(f"non-esp {a.peer}:{sport} (IKE) ignored", flush=True)
                return
            encap = "udp"
            if not a.natt:
                return self.drop("encap-mismatch", f"ESP in UDP {sport}->{dport} on a raw ESP tunnel", outer)
            if dport != NATT_PORT or sport != NATT_PORT:
                return self.drop("encap-mismatch", f"ESP in UDP {sport}->{dport}, expected 4500->4500", outer)
        else:
            encap = "esp"
            if a.natt:
                return self.drop("encap-mismatch", "raw ESP on a NAT-T tunnel", outer)
        self.stats["encap"][encap] += 1
        pkt = IP(outer)
        if ESP not in pkt or len(pkt[ESP].data or b"") < 8 + ICV_LEN + 4:
            return self.drop("malformed", "too short for ESP", outer)
        esp = pkt[ESP]
        spi, seq = esp.spi, esp.seq
        what = f"spi=0x{spi:08x} seq={seq}"
        if spi != self.sa_in.spi:
            return self.drop("unknown-spi", what, outer)
        if seq == 0:
            return self.drop("seq-zero", what, outer)
        if not self.window.check(seq):
            return self.drop("replay", what)
        # What SecurityAssociation.decrypt() does, without throwing the
        # trailer away: the SA's algorithm opens the payload (AEAD: a bad
        # ICV raises IPSecIntegrityError) and gives back data, padding and
        # next header, so those can be checked too.
        try:
            self.sa_in.check_spi(pkt)
            plain = self.sa_in.crypt_algo.decrypt(self.sa_in, esp, self.sa_in.crypt_key,
                                                  self.sa_in.crypt_icv_size or self.sa_in.crypt_algo.icv_size)
        except IPSecIntegrityError as e:
            return self.drop("icv", what, outer, e)
        except Exception as e:  # noqa: BLE001 - anything else Scapy refuses
            return self.drop("malformed", what, outer, e)
        if plain.padding != bytes(range(1, plain.padlen + 1)):
            return self.drop("padding", f"{what} padlen={plain.padlen} padding={plain.padding.hex()}", outer)
        if plain.nh != 4:
            return self.drop("next-header", f"{what} next header {plain.nh}, expected 4 (IPv4)", outer)
        inner = bytearray(plain.data)
        if len(inner) < 20 or inner[0] >> 4 != 4 or struct.unpack("!H", inner[2:4])[0] != len(inner):
            return self.drop("malformed", f"{what}: the inner packet is not one whole IPv4 packet", outer)
        self.window.update(seq)
        src, dst = ipaddress.ip_address(bytes(inner[12:16])), ipaddress.ip_address(bytes(inner[16:20]))
        if src not in a.remote_net or dst not in a.local_net:
            return self.drop("selector", f"{what} {src} > {dst}")
        if inner[8] <= 1:
            return self.drop("ttl", f"{what} {src} > {dst}")
        inner[8] -= 1
        # RFC 6040: congestion experienced outside is carried inwards.
        if outer[1] & 3 == 3 and inner[1] & 3 in (1, 2):
            inner[1] |= 3
        fix_ip_checksum(inner)
        self.stats["decrypted"] += 1
        self.stats["decrypted_bytes"] += len(inner)
        self.inside.send(Ether(dst=self.host_mac, src=self.in_mac, type=ETH_P_IP) / bytes(inner))
        print(f"decrypt {encap} {what} {src} > {dst} proto {inner[9]} len {len(inner)}", flush=True)

    # ---- inside -> outside: encrypt ------------------------------------

    def from_inside(self, frame):
        a = self.a
        if len(frame) < 34 or struct.unpack("!H", frame[12:14])[0] != ETH_P_IP:
            return
        total = struct.unpack("!H", frame[16:18])[0]
        inner = bytearray(frame[14:14 + total])
        if len(inner) != total or frame[14] >> 4 != 4:
            return self.drop("inside-malformed", f"inner IPv4 of {len(frame) - 14} bytes says {total}")
        src, dst = ipaddress.ip_address(bytes(inner[12:16])), ipaddress.ip_address(bytes(inner[16:20]))
        if inner[8] <= 1:
            return self.drop("ttl", f"{src} > {dst}")
        inner[8] -= 1
        fix_ip_checksum(inner)
        seq = self.sa_out.seq_num
        if seq > 0xFFFFFFFF:
            return self.drop("seq-exhausted", f"{src} > {dst}")
        head = self.sa_out.tunnel_header
        head.tos = inner[1]  # DSCP copied, ECN per RFC 6040 normal mode
        head.flags = "DF" if inner[6] & 0x40 else 0
        head.id = seq & 0xFFFF
        esp = self.sa_out.encrypt(IP(bytes(inner)))
        self.stats["encrypted"] += 1
        self.stats["encrypted_bytes"] += len(inner)
        self.outside.send(Ether(dst=self.router_mac, src=self.out_mac, type=ETH_P_IP) / esp)
        encap = "udp" if a.natt else "esp"
        print(f"encrypt {encap} spi=0x{self.sa_out.spi:08x} seq={seq} {src} > {dst} proto {inner[9]} "
              f"len {len(inner)}", flush=True)

    def summary(self):
        s = dict(self.stats)
        s["kernel_icmp_unreachables"] = icmp_unreachables() - self.icmp_start
        s["replay_top"] = self.window.top
        s["next_out_seq"] = self.sa_out.seq_num
        return s


class Fatal(Exception):
    pass


def main(argv):
    a = parse_args(argv)
    stopping = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopping.append(signum))
    gw = Gateway(a)
    gw.open()
    print(f"ready: {a.suite}{' nat-t' if a.natt else ''}, in spi=0x{a.in_spi:08x} out spi=0x{a.out_spi:08x}, "
          f"{a.local} <-> {a.peer}", flush=True)
    if a.ready_file:
        with open(a.ready_file, "w") as f:
            f.write("ready\n")
    handlers = {gw.outside.fileno(): (gw.outside, gw.from_outside), gw.inside.fileno(): (gw.inside, gw.from_inside)}
    fatal = None
    try:
        while not stopping:
            ready, _, _ = select.select(list(handlers), [], [], 0.2)
            for fd in ready:
                sock, handle = handlers[fd]
                _cls, frame, _ts = sock.recv_raw()
                if frame is not None:
                    handle(frame)
    except Fatal as e:
        fatal = str(e)
    summary = gw.summary()
    print("summary " + json.dumps(summary, sort_keys=True), flush=True)
    if fatal:
        return 3
    refused = sum(summary["drops"].values())
    if refused or summary["kernel_icmp_unreachables"]:
        print(f"scapy_cgw: {refused} packets refused, kernel sent {summary['kernel_icmp_unreachables']} "
              "ICMP unreachables", file=sys.stderr, flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
