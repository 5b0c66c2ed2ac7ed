#!/usr/bin/env bash
# The namespace lab: a VPC host, the vpngw gateway, an "internet" router, a
# customer gateway and an IDC host, each in a network namespace of its own,
# joined by veth pairs. Only documentation and private addresses, only
# inside these namespaces.
#
#   PREFIX-vpc   vpc0 10.1.0.5/16 ----- gw-in 10.1.0.1/16        PREFIX-gw
#                                       gw-out 192.0.2.1/24
#   PREFIX-inet  inet0 192.0.2.254/24 -- (gw-out)
#                inet1 198.51.100.254/24 -- cgw-out 198.51.100.1/24  PREFIX-cgw
#                                          cgw-in 172.16.1.1/24
#   PREFIX-idc   idc0 172.16.1.9/24 ----- (cgw-in)
#
# The gateway and customer gateway namespaces do not forward in the kernel:
# whatever crosses them is carried by what runs there (vpngw, or a Scapy
# peer). The hosts send with checksum offload off, as a real NIC's peer
# would (a veth otherwise hands on partial checksums).
#
# Usage: scripts/lab.sh up [PREFIX]     build it (tearing down any old one)
#        scripts/lab.sh down [PREFIX]   delete it (quietly, whatever is left)
# PREFIX defaults to vpngw-lab; tests pass their own. LAB_QUEUES=N gives
# every veth N queues (one per vpngw worker; default 1). LAB_IDCS=N (2 or
# 3; default 1) adds data centres: customer gateway i at 198.51.100.i on
# the internet's segment (then a bridge in PREFIX-inet), its IDC host
# 172.16.i.9/24, in PREFIX-cgwI and PREFIX-idcI (interfaces named as in
# the first: cgw-out, cgw-in, idc0).
set -euo pipefail

cmd=${1:-}
P=${2:-vpngw-lab}
QUEUES=${LAB_QUEUES:-1}
IDCS=${LAB_IDCS:-1}

down() {
  for n in vpc gw inet cgw idc cgw2 idc2 cgw3 idc3; do
    # Kill anything still running in the namespace, then delete it (with
    # its interfaces).
    if ip netns list | grep -qw "$P-$n"; then
      ip netns pids "$P-$n" 2>/dev/null | xargs -r kill -9 2>/dev/null || true
      ip netns del "$P-$n" 2>/dev/null || true
    fi
  done
}

pair() { # ns_a if_a ns_b if_b
  local q=(numtxqueues "$QUEUES" numrxqueues "$QUEUES")
  ip -n "$P-$1" link add "$2" "${q[@]}" type veth peer name "$4" "${q[@]}" netns "$P-$3"
  ip -n "$P-$1" link set "$2" up
  ip -n "$P-$3" link set "$4" up
}

addr() { ip -n "$P-$1" addr add "$3" dev "$2"; }

up() {
  down
  trap 'down' ERR
  for n in vpc gw inet cgw idc; do
    ip netns add "$P-$n"
    ip -n "$P-$n" link set lo up
    # No IPv6 router or duplicate-address chatter on the lab's links.
    ip netns exec "$P-$n" sysctl -qw net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.all.accept_ra=0
  done
  pair vpc vpc0 gw gw-in
  pair gw gw-out inet inet0
  pair inet inet1 cgw cgw-out
  pair cgw cgw-in idc idc0
  addr vpc vpc0 10.1.0.5/16
  addr gw gw-in 10.1.0.1/16
  addr gw gw-out 192.0.2.1/24
  addr inet inet0 192.0.2.254/24
  if [ "$IDCS" -gt 1 ]; then
    # One segment for every customer gateway.
    ip -n "$P-inet" link add br0 type bridge
    ip -n "$P-inet" link set inet1 master br0
    ip -n "$P-inet" link set br0 up
    addr inet br0 198.51.100.254/24
  else
    addr inet inet1 198.51.100.254/24
  fi
  addr cgw cgw-out 198.51.100.1/24
  addr cgw cgw-in 172.16.1.1/24
  addr idc idc0 172.16.1.9/24
  ip -n "$P-vpc" route add default via 10.1.0.1
  ip -n "$P-gw" route add default via 192.0.2.254
  ip -n "$P-cgw" route add default via 198.51.100.254
  ip -n "$P-idc" route add default via 172.16.1.1
  ip netns exec "$P-inet" sysctl -qw net.ipv4.ip_forward=1
  for n in gw cgw; do
    ip netns exec "$P-$n" sysctl -qw net.ipv4.ip_forward=0
  done
  ip netns exec "$P-vpc" ethtool -K vpc0 tx off >/dev/null
  ip netns exec "$P-idc" ethtool -K idc0 tx off >/dev/null
  for i in $(seq 2 "$IDCS"); do
    for n in cgw$i idc$i; do
      ip netns add "$P-$n"
      ip -n "$P-$n" link set lo up
      ip netns exec "$P-$n" sysctl -qw net.ipv6.conf.default.accept_ra=0 net.ipv6.conf.all.accept_ra=0
    done
    pair inet "inet$i" "cgw$i" cgw-out
    ip -n "$P-inet" link set "inet$i" master br0
    pair "cgw$i" cgw-in "idc$i" idc0
    addr "cgw$i" cgw-out "198.51.100.$i/24"
    addr "cgw$i" cgw-in "172.16.$i.1/24"
    addr "idc$i" idc0 "172.16.$i.9/24"
    ip -n "$P-cgw$i" route add default via 198.51.100.254
    ip -n "$P-idc$i" route add default via "172.16.$i.1"
    ip netns exec "$P-cgw$i" sysctl -qw net.ipv4.ip_forward=0
    ip netns exec "$P-idc$i" ethtool -K idc0 tx off >/dev/null
  done
  trap - ERR
}

case "$cmd" in
  up) up ;;
  down) down ;;
  *) echo "usage: $0 up|down [PREFIX]" >&2; exit 2 ;;
esac
