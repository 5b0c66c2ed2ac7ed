#!/usr/bin/env bash
# The demo: vpngw as a gateway on a wire. It builds the namespace lab
# (scripts/lab.sh: a VPC host, the cloud gateway, an internet router, a
# customer gateway and an IDC host), runs two vpngw daemons (the cloud's and
# the IDC's, with static SAs: scripts/lab/gw.toml and cgw.toml), shows the
# VPC host pinging the IDC host through the ESP tunnel, has tshark (an
# independent ESP implementation) decrypt what crossed the internet, prints
# the tunnel counters. Then the cloud gateway negotiates the tunnel with
# IKEv2 against strongSwan (charon, an independent implementation) as the
# customer gateway (scripts/lab/gw-ike.toml), and the ping goes through
# the SAs they agreed. It cleans everything up, also when interrupted.
# Needs root (namespaces, XDP).
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what the demo needs, building vpngw"
scripts/deps.sh
cargo build --release --locked -q -p vpngw-ctrl
vpngw=$PWD/target/release/vpngw
vpnctl=$PWD/target/release/vpnctl
swan="python3 scripts/interop/swan.py"

P=vpngw-demo
work=$(mktemp -d)
cleanup() {
  pkill -TERM -f "$vpngw -c scripts/lab/" 2>/dev/null || true
  $swan stop --dir "$work/charon" >/dev/null 2>&1 || true
  sleep 0.5
  scripts/lab.sh down "$P"
  rm -rf "$work"
}
trap cleanup EXIT

say "the lab: VPC 10.1.0.0/16 -- gateway 192.0.2.1 -- internet -- customer gateway 198.51.100.1 -- IDC 172.16.1.0/24"
scripts/lab.sh up "$P"
ip netns exec "$P-vpc" ping -c1 -W1 172.16.1.9 >/dev/null 2>&1 && { echo "the VPC reaches the IDC without vpngw?" >&2; exit 1; }
echo "without vpngw, the VPC host cannot reach the IDC host (nothing forwards)"

say "starting vpngw on both gateways (XDP steering, AF_XDP sockets, one worker each)"
ip netns exec "$P-gw" "$vpngw" -c scripts/lab/gw.toml --no-state --socket "$work/gw.sock" >"$work/gw.out" 2>"$work/gw.err" &
ip netns exec "$P-cgw" "$vpngw" -c scripts/lab/cgw.toml --no-state --socket "$work/cgw.sock" >"$work/cgw.out" 2>"$work/cgw.err" &
sleep 1
cat "$work/gw.err"
ip netns exec "$P-inet" tshark -q -i inet0 -w "$work/internet.pcap" 2>/dev/null &
sleep 1

say "the VPC host 10.1.0.5 pings the IDC host 172.16.1.9 through the tunnel"
# The VPC host's first packet makes the gateway learn its MAC (counted as
# no-neighbour until the kernel has it); wait for the first answer.
for _ in 1 2 3 4 5; do ip netns exec "$P-vpc" ping -c1 -W1 172.16.1.9 >/dev/null && break; done
ip netns exec "$P-vpc" ping -c4 -i 0.3 172.16.1.9
sleep 0.5
pkill -INT -f "tshark -q -i inet0 -w $work" || true
sleep 1

say "what crossed the internet, decrypted by tshark with the tunnel's keys (icv_good 1: authentic)"
sa() { printf '"IPv4","*","*","%s","AES-GCM with 16 octet ICV [RFC4106]","0x%s","NULL",""' "$1" "$2"; }
tshark -r "$work/internet.pcap" -Y esp -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE \
  -o "uat:esp_sa:$(sa 0x00001001 0102030405060708090a0b0c0d0e0f1011121314)" \
  -o "uat:esp_sa:$(sa 0x00002001 a1a2a3a4a5a6a7a8a9aaabacadaeafb0b1b2b3b4)" \
  -T fields -E header=y -e ip.src -e ip.dst -e esp.spi -e esp.sequence -e esp.icv_good -e icmp.type 2>/dev/null \
  | tail -n +1 | column -t | head -12

say "stopping the gateways; the cloud gateway's counters"
pkill -TERM -f "$vpngw -c scripts/lab/" || true
sleep 1
cat "$work/gw.out"

say "now with IKEv2: strongSwan (charon, kernel-libipsec) is the customer gateway"
$swan start --ns "$P-cgw" --dir "$work/charon" --forward >/dev/null
$swan load --dir "$work/charon" --name vpc --local 198.51.100.1 --remote 192.0.2.1 --psk "lab pre-shared key 7" \
  --local-ts 172.16.1.0/24 --remote-ts 10.1.0.0/16 --ike-proposals aes256gcm16-prfsha256-x25519 --esp-proposals aes128gcm16
ip netns exec "$P-gw" "$vpngw" -c scripts/lab/gw-ike.toml --no-state --socket "$work/gw.sock" >"$work/gw.out" 2>"$work/gw.err" &
for _ in $(seq 50); do
  "$vpnctl" --socket "$work/gw.sock" --json show ike 2>/dev/null | grep -q '"up": true' && break
  sleep 0.2
done
"$vpnctl" --socket "$work/gw.sock" show ike

say "the VPC host pings the IDC host through the negotiated tunnel"
for _ in 1 2 3 4 5; do ip netns exec "$P-vpc" ping -c1 -W1 172.16.1.9 >/dev/null && break; done
ip netns exec "$P-vpc" ping -c4 -i 0.3 172.16.1.9

say "strongSwan's view of the same SAs"
$swan sas --dir "$work/charon" --json | python3 -c '
import json, sys
for ike in json.load(sys.stdin):
    print("IKE SA %s: %s/%s/%s with %s" % (ike["state"], ike["encr_alg"], ike["prf_alg"], ike["dh_group"], ike["remote_host"]))
    for c in ike["children"]:
        print("  child SA %s: %s, SPIs in %s out %s, %s packets in, %s out" % (
            c["state"], c["encr_alg"], c["spi_in"], c["spi_out"], c["packets_in"], c["packets_out"]))'
"$vpnctl" --socket "$work/gw.sock" events | grep -E "tunnel-up|child SA" | head -4

