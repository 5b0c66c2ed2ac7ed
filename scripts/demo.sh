#!/usr/bin/env bash
# The demo: what vpngw can do today, on capture files. A VPC host pings an
# IDC host; vpngw encrypts the packets into an ESP tunnel (as the cloud
# gateway would), tshark decrypts them independently, and vpngw decrypts
# them again as the far gateway would, dropping a replayed and a forged
# packet with their counters. (Forwarding between interfaces comes with the
# AF_XDP data path; this demo will then bring up the namespace lab.)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "installing what the demo needs, building vpngw"
scripts/deps.sh
cargo build --release --locked -q -p vpngw-ctrl
pcap=target/release/vpngw-pcap

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
KEY=4a6f686e2053686f72742069732061206b657931   # 16-byte AES key || 4-byte salt
SA=(--spi 0x1001 --suite aes-gcm-128 --key "$KEY")

say "VPC host 10.1.0.5 pings IDC host 172.16.1.9 (4 echo requests, made by Scapy)"
python3 - "$work/plain.pcap" <<'PY'
import sys
from scapy.all import IP, ICMP, Raw, wrpcap
wrpcap(sys.argv[1], [IP(src="10.1.0.5", dst="172.16.1.9") / ICMP(id=7, seq=i) / Raw(b"vpngw demo %d" % i) for i in range(1, 5)])
PY

say "vpngw encrypts them into the tunnel 192.0.2.1 -> 198.51.100.1 (ESP in UDP 4500)"
$pcap encap "${SA[@]}" --src 192.0.2.1 --dst 198.51.100.1 --natt 4500:4500 "$work/plain.pcap" "$work/esp.pcap"

say "tshark, an independent ESP implementation, decrypts them and checks every ICV"
tshark -r "$work/esp.pcap" -o esp.enable_encryption_decode:TRUE -o esp.enable_authentication_check:TRUE \
  -o "uat:esp_sa:\"IPv4\",\"*\",\"*\",\"0x00001001\",\"AES-GCM with 16 octet ICV [RFC4106]\",\"0x$KEY\",\"NULL\",\"\"" \
  -T fields -E header=y -e ip.src -e ip.dst -e esp.spi -e esp.sequence -e esp.icv_good -e icmp.seq 2>/dev/null \
  | column -t

say "an attacker replays packet 2 and flips a bit in packet 4's ICV"
python3 - "$work/esp.pcap" "$work/wire.pcap" <<'PY'
import sys
from scapy.utils import RawPcapReader, RawPcapWriter
pkts = [bytes(d) for d, _ in RawPcapReader(sys.argv[1])]
forged = bytearray(pkts[3]); forged[-1] ^= 1
w = RawPcapWriter(sys.argv[2], linktype=101)
for p in [pkts[0], pkts[1], pkts[1], pkts[2], bytes(forged), pkts[3]]:
    w.write(p)
w.close()
PY

say "vpngw, as the IDC's gateway, decrypts the six packets that arrive"
$pcap decap "${SA[@]}" --natt 4500:4500 "$work/wire.pcap" "$work/inner.pcap" || true

say "the inner packets it accepted, as tshark sees them"
tshark -r "$work/inner.pcap" 2>/dev/null
