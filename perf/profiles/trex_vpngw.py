"""TRex stateless profile for benchmarking a vpngw gateway on bare metal.

It sends what `vpngw-bench generate` sends in the lab: UDP/IPv4 from the
VPC side (10.1.0.77 by default) to an address behind the tunnel, 64-byte,
IMIX (64/576/1400 as 7:4:1) or fixed-size IP packets, spread over N flows
by UDP source port (10000 and up), with a latency stream (TRex flow stats)
beside the load so that TRex reports one-way latency through the gateway.

  trex-console> start -f trex_vpngw.py -m 50% --port 0 -t size=64,flows=1000,dst=172.16.1.99
  trex-console> start -f trex_vpngw.py -m 1mpps -t size=imix

Tunables: size (IP bytes, or imix), flows, src, dst, dport, latency_pps
(0: no latency stream). TRex's own NDR search (`ndr` in the console, or
trex's ndr_bench) finds the no-drop rate; see docs/BENCHMARKS.md.

Written against the TRex STL API (trex_stl_lib); not run in vpngw's CI,
which has no TRex and no NIC.
"""

import argparse

from trex_stl_lib.api import (IP, UDP, Ether, STLFlowLatencyStats, STLPktBuilder, STLScVmRaw, STLStream,
                              STLTXCont, STLVmFixIpv4, STLVmFlowVar, STLVmWrFlowVar)

IMIX = [(64, 7), (576, 4), (1400, 1)]


class VpngwProfile:
    def packet(self, size, flows, src, dst, dport):
        base = Ether() / IP(src=src, dst=dst, flags="DF") / UDP(sport=10000, dport=dport)
        pad = max(0, size - 28) * b"\x5a"
        vm = STLScVmRaw([
            STLVmFlowVar(name="sport", min_value=10000, max_value=10000 + flows - 1, size=2, op="inc"),
            STLVmWrFlowVar(fv_name="sport", pkt_offset="UDP.sport"),
            STLVmFixIpv4(offset="IP"),
        ])
        return STLPktBuilder(pkt=base / pad, vm=vm)

    def get_streams(self, tunables=None, direction=0, **kwargs):
        # Newer TRex passes tunables as a list of strings, older as kwargs.
        p = argparse.ArgumentParser(prog="trex_vpngw.py")
        p.add_argument("--size", default="64")
        p.add_argument("--flows", type=int, default=1)
        p.add_argument("--src", default="10.1.0.77")
        p.add_argument("--dst", default="172.16.1.99")
        p.add_argument("--dport", type=int, default=9)
        p.add_argument("--latency_pps", type=int, default=1000)
        if isinstance(tunables, list):
            a = p.parse_args(tunables)
        else:
            a = p.parse_args([])
            for k, v in kwargs.items():
                if hasattr(a, k):
                    setattr(a, k, type(getattr(a, k))(v))
        mix = IMIX if str(a.size).lower() == "imix" else [(int(a.size), 1)]
        streams = [
            STLStream(packet=self.packet(size, a.flows, a.src, a.dst, a.dport), mode=STLTXCont(pps=weight))
            for size, weight in mix
        ]
        if a.latency_pps > 0:
            streams.append(STLStream(
                packet=self.packet(64, 1, a.src, a.dst, a.dport),
                mode=STLTXCont(pps=a.latency_pps),
                flow_stats=STLFlowLatencyStats(pg_id=7)))
        return streams


def register():
    return VpngwProfile()
