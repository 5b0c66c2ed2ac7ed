#!/usr/bin/env bash
# The test command: installs what it needs, builds, and runs every test
# vpngw has — unit and property tests, vpngw against Scapy and tshark, the
# fixture generator's determinism, a bounded fuzz run, and a benchmark smoke
# run. CI runs exactly this (.ci/run).
# Usage: scripts/test.sh            (FUZZ_SECONDS=60 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
start=$SECONDS
step() { printf '\n=== [%4ss] %s\n' "$((SECONDS - start))" "$*"; }

step "dependencies"
scripts/deps.sh --fuzz

step "format"
cargo fmt --all -- --check

step "clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test (unit, property, Scapy fixtures)"
cargo test --workspace --locked

step "build the tools (release)"
cargo build --release --locked -p vpngw-ctrl -p vpngw-perf

step "Scapy fixtures (ESP, IKEv2) regenerate byte for byte"
python3 engine/tests/fixtures/esp/gen_fixtures.py >/dev/null
git diff --exit-code --stat -- engine/tests/fixtures/esp
python3 ctrl/tests/fixtures/ike/gen_ike_fixtures.py >/dev/null
python3 ctrl/tests/fixtures/ike/gen_crypto_vectors.py >/dev/null
python3 ctrl/tests/fixtures/ike/gen_sk_vectors.py >/dev/null
git diff --exit-code --stat -- ctrl/tests/fixtures/ike

step "the Scapy checker catches what it must (self-test)"
python3 scripts/interop/scapy_check_encap.py --self-test

step "vpngw-pcap against Scapy and tshark"
python3 scripts/interop/esp_interop.py --bin target/release/vpngw-pcap

# A bounded fuzz run of one target; on a crash, the panic, the input and
# the artifact path to reproduce it.
fuzz() {
  local target=$1; shift
  step "fuzz $* for ${FUZZ_SECONDS}s"
  local log
  log=$(mktemp)
  if ! (cd engine && cargo +nightly fuzz run "$target" -- -max_total_time="$FUZZ_SECONDS" -print_final_stats=1) >"$log" 2>&1; then
    tail -60 "$log"
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|new_units_added)" "$log"
  rm -f "$log"
}
fuzz esp_inbound inbound ESP
fuzz control_request control socket requests
fuzz ike_message IKEv2 message parsing
fuzz ike_exchange hostile datagrams against an established IKE SA

step "benchmark smoke run (numbers not asserted)"
out=$(mktemp)
report=$(mktemp -d)
check() { python3 -c "import json,sys; r=json.load(open(sys.argv[1])); assert $1, r" "$out"; }
target/release/vpngw-bench --quick --json "$out" crypto --size 64 --size 1400 >/dev/null
check 'r["bench"]=="crypto" and len(r["results"])==20 and all(x["gbps"]>0 for x in r["results"])'
target/release/vpngw-bench --quick --json "$out" --report "$report" esp --size 64 --size 1400 >/dev/null
check 'r["bench"]=="esp" and len(r["results"])==20'
cp "$out" "$report/esp-before.json"
# The same run compared with the one before: every measurement found in both.
target/release/vpngw-bench --quick --json "$out" --compare "$report/esp-before.json" esp --size 64 --size 1400 \
  | grep -E '^[0-9]+ of 100 unchanged' >/dev/null
test -s "$report/esp.md" && test -s "$report/esp-encap.svg" && test -s "$report/esp-decap.svg"
target/release/vpngw-bench --quick --json "$out" fib >/dev/null
check 'r["bench"]=="fib" and r["results"]'
target/release/vpngw-bench --quick --json "$out" spd >/dev/null
check 'r["bench"]=="spd" and len(r["results"])==3'
target/release/vpngw-bench --quick --json "$out" pipeline >/dev/null
check 'r["bench"]=="pipeline" and len(r["results"])==12 and len(r["builds"])==2 and all(b["ms"]>0 for b in r["builds"])'
target/release/vpngw-bench --quick --json "$out" --report "$report" wire >/dev/null
check 'r["bench"]=="wire" and len(r["results"])==18 and all(x["received_pps"]>0 for x in r["results"]) and len(r["tcp"])==3 and all(t["mbps"]>0 for t in r["tcp"]) and len(r["ndr"])==3 and len(r["latency"])==17 and all(l["received"]>0 and l["latency"]["p50_ns"]>0 for l in r["latency"])'
for f in wire.md wire-pps.svg wire-gbps.svg wire-latency-p50.svg wire-latency-p99.svg; do test -s "$report/$f"; done
grep -q "strongswan esp" "$report/wire.md"
target/release/vpngw-bench --quick --json "$out" monitoring >/dev/null
check 'r["bench"]=="monitoring" and len(r["results"])==20 and all(x["mpps"]>0 for x in r["results"])'
target/release/vpngw-bench --quick --json "$out" ctl >/dev/null
check 'r["bench"]=="ctl" and len(r["phases"])==3 and r["sent"]>0'
rm -rf "$out" "$report"

step "all tests passed"
