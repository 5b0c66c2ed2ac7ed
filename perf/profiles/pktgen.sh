#!/bin/bash
# Linux kernel pktgen (modprobe pktgen) sending what `vpngw-bench generate`
# sends in the lab: UDP/IPv4 to an address behind the gateway, N flows by
# source port, at a set rate or as fast as the NIC goes. For a bare-metal
# tester whose NIC is cabled to the gateway's inside port.
#
#   perf/profiles/pktgen.sh DEV DST_MAC [SIZE] [FLOWS] [PPS] [SECONDS]
#   perf/profiles/pktgen.sh enp1s0f0 3c:fd:fe:00:00:01 64 1000 0 10
#
# SIZE is the IP packet size (pktgen's pkt_size counts the frame without
# the FCS: SIZE + 14); PPS 0 means no rate limit. It prints pktgen's
# result line (packets sent, pps, Mb/s). What arrived is counted on the
# receiving side (the sink's NIC counters, or `vpngw-bench sink` there);
# loss is sent minus received. Not run in vpngw's CI: its kernel has no
# pktgen module.
set -euo pipefail
DEV=${1:?interface}; DST_MAC=${2:?the next hop MAC, the inside port of the gateway}
SIZE=${3:-64}; FLOWS=${4:-1}; PPS=${5:-0}; SECONDS_=${6:-10}
SRC=${SRC:-10.1.0.77}; DST=${DST:-172.16.1.99}
modprobe pktgen
pg() { echo "$2" > "/proc/net/pktgen/$1"; }
THREAD=kpktgend_0
pg "$THREAD" rem_device_all
pg "$THREAD" "add_device $DEV"
pg "$DEV" "count 0"
pg "$DEV" "pkt_size $((SIZE + 14))"
pg "$DEV" "dst $DST"
pg "$DEV" "src_min $SRC"
pg "$DEV" "src_max $SRC"
pg "$DEV" "dst_mac $DST_MAC"
pg "$DEV" "udp_dst_min 9"
pg "$DEV" "udp_dst_max 9"
pg "$DEV" "udp_src_min 10000"
pg "$DEV" "udp_src_max $((10000 + FLOWS - 1))"
pg "$DEV" "flag UDPSRC_RND"
pg "$DEV" "burst 32"
[ "$PPS" -gt 0 ] && pg "$DEV" "ratep $PPS"
pg pgctrl start &
sleep "$SECONDS_"
pg pgctrl stop || true
wait || true
grep -A2 "^Result" "/proc/net/pktgen/$DEV"
