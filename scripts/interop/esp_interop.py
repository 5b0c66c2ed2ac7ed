#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""vpngw's ESP against independent implementations, end to end over files.

For every suite, outer IPv4 and IPv6, raw ESP and ESP in UDP, with and without
ESN (including a run that crosses 2^32), this runs ``vpngw-pcap encap`` over
inner packets Scapy made (the committed fixtures: IPv4 and IPv6 inner, Ethernet
and raw-IP captures) and then:

* Scapy decrypts every packet and checks every header field
  (``scapy_check_encap.py``);
* for AES-GCM and AES-CBC with HMAC-SHA-256 without ESN, tshark 4.0
  decrypts the capture and must report ``icv_good`` for every packet
  (tshark has no ChaCha20 and no ESN);
* ``vpngw-pcap decap`` turns the output back into the exact input.

Usage: esp_interop.py --bin target/release/vpngw-pcap [--keep DIR]
Exit status 0 only if every check passed.
"""

import argparse
import hashlib
import pathlib
import shutil
import subprocess
import sys
import tempfile

from scapy.utils import RawPcapReader

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parent.parent
FIXTURES = ROOT / "engine/tests/fixtures/esp"
CHECKER = HERE / "scapy_check_encap.py"

# suite -> bytes of keying material (AEAD: key and 4-byte salt; AES-CBC:
# encryption key and 32-byte HMAC-SHA-256 key).
SUITES = {
    "aes-gcm-128": 20,
    "aes-gcm-256": 36,
    "chacha20-poly1305": 36,
    "aes-cbc-128-hmac-sha256": 48,
    "aes-cbc-256-hmac-sha256": 64,
}
OUTER = {"ipv4": ("192.0.2.1", "198.51.100.1"), "ipv6": ("2001:db8::1", "2001:db8:1::1")}
# Inner packets made by Scapy: IPv4 over Ethernet, IPv6 raw, and a raw mix.
INPUTS = [
    "basic-aes-gcm-128-v4-in-v4.plain.pcap",
    "basic-aes-gcm-128-v6-in-v6.plain.pcap",
    "natt-aes-gcm-256-v4-in-mixed-4500-4500.plain.pcap",
]


def keymat(name, suite):
    """Deterministic keying material for one run."""
    return (hashlib.sha512(name.encode()).hexdigest() * 2)[: 2 * SUITES[suite]]


def run(cmd):
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True)


def tshark_icv(pcap, outer, spi, suite, key):
    """Per-packet ICV verdicts from tshark, as strings."""
    family = "IPv4" if outer == "ipv4" else "IPv6"
    if suite.startswith("aes-gcm"):
        algos = f'"AES-GCM with 16 octet ICV [RFC4106]","0x{key}","NULL",""'
    else:
        enc, auth = key[:-64], key[-64:]
        algos = f'"AES-CBC [RFC3602]","0x{enc}","HMAC-SHA-256-128 [RFC4868]","0x{auth}"'
    sa = f'"{family}","*","*","{spi:#010x}",{algos}'
    r = run([
        "tshark", "-r", pcap,
        "-o", "esp.enable_encryption_decode:TRUE",
        "-o", "esp.enable_authentication_check:TRUE",
        "-o", f"uat:esp_sa:{sa}",
        "-T", "fields", "-e", "esp.icv_good",
    ])
    if r.returncode != 0:
        return None, r.stderr
    return [line.strip() for line in r.stdout.splitlines()], ""


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="path to vpngw-pcap")
    ap.add_argument("--keep", help="write the captures here instead of a temporary directory")
    args = ap.parse_args()
    if shutil.which("tshark") is None:
        print("esp_interop: tshark is not installed (apt-get install -y tshark)", file=sys.stderr)
        return 2

    work = pathlib.Path(args.keep or tempfile.mkdtemp(prefix="vpngw-interop-"))
    work.mkdir(parents=True, exist_ok=True)
    failures, checks, tshark_packets = [], 0, 0
    spi = 0x2000
    for suite in SUITES:
        for outer, (src, dst) in OUTER.items():
            for natt in (None, "4500:4500", "31000:4501"):
                for esn, first_seq in ((False, 1), (True, 0xFFFFFFFE)):
                    for inp in INPUTS:
                        spi += 1
                        name = f"{suite}-{outer}-{'natt' + natt.replace(':', '-') if natt else 'esp'}-{'esn' if esn else 'noesn'}-{inp.split('.')[0]}"
                        key = keymat(name, suite)
                        plain, esp_out, back = FIXTURES / inp, work / f"{name}.esp.pcap", work / f"{name}.back.pcap"
                        sa = ["--spi", hex(spi), "--suite", suite, "--key", key] + (["--esn"] if esn else [])
                        enc = ["--src", src, "--dst", dst, "--seq", hex(first_seq)] + (["--natt", natt] if natt else [])
                        checks += 1
                        r = run([args.bin, "encap", *sa, *enc, plain, esp_out])
                        if r.returncode != 0:
                            failures.append(f"{name}: vpngw-pcap encap: {r.stdout}{r.stderr}")
                            continue
                        r = run([sys.executable, CHECKER, *sa, *enc, plain, esp_out])
                        if r.returncode != 0:
                            failures.append(f"{name}: scapy: {r.stdout[-2000:]}{r.stderr[-2000:]}")
                        natt_args = ["--natt", natt] if natt else []
                        r = run([args.bin, "decap", *sa, *natt_args, "--seq", hex(first_seq), "--dst", dst, esp_out, back])
                        if r.returncode != 0 or packets(back) != packets(plain):
                            failures.append(f"{name}: vpngw-pcap decap did not restore the input: {r.stdout}{r.stderr}")
                        if suite.startswith("aes-") and not esn and natt != "31000:4501":
                            verdicts, err = tshark_icv(esp_out, outer, spi, suite, key)
                            n = len(packets(plain))
                            if verdicts is None or len(verdicts) != n or any(v not in ("1", "True") for v in verdicts):
                                failures.append(f"{name}: tshark icv_good {verdicts} for {n} packets {err}")
                            else:
                                tshark_packets += n
    for f in failures:
        print("FAIL", f)
    print(f"esp interop: {checks} runs (Scapy checked every packet; tshark verified {tshark_packets} ICVs); "
          f"{len(failures)} failed")
    if not args.keep:
        shutil.rmtree(work)
    return 1 if failures else 0


def packets(path):
    """The records of a capture, as bytes."""
    return [bytes(data) for data, _ in RawPcapReader(str(path))]




if __name__ == "__main__":
    sys.exit(main())
