#!/usr/bin/env bash
# Installs what vpngw's demo and tests need on a fresh Debian 12 machine:
# Debian packages (tshark, pip; clang, llvm and libbpf-dev, which build the
# XDP programs; iproute2, procps, ethtool, iperf3 and ping for the lab;
# strongSwan's charon and swanctl, the independent IKEv2 peer),
# Python packages (Scapy; prometheus-client, whose parser checks the
# metrics endpoint), and, with --fuzz,
# a nightly toolchain and cargo-fuzz. Each is
# skipped when already present, so running this again is quick.
# Usage: scripts/deps.sh [--fuzz]
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '[deps] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=()
command -v tshark >/dev/null || apt_packages+=(tshark)
python3 -m pip --version >/dev/null 2>&1 || apt_packages+=(python3-pip)
command -v clang >/dev/null || apt_packages+=(clang)
command -v llc >/dev/null || apt_packages+=(llvm)
[ -f /usr/include/bpf/bpf_helpers.h ] || apt_packages+=(libbpf-dev)
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v sysctl >/dev/null || apt_packages+=(procps)
command -v ethtool >/dev/null || apt_packages+=(ethtool)
command -v iperf3 >/dev/null || apt_packages+=(iperf3)
command -v ping >/dev/null || apt_packages+=(iputils-ping)
command -v trafgen >/dev/null || apt_packages+=(netsniff-ng)
# strongSwan, the independent IKEv2 peer: charon with userspace ESP
# (kernel-libipsec, in libcharon-extra-plugins) and swanctl.
[ -x /usr/lib/ipsec/charon ] && command -v swanctl >/dev/null ||
  apt_packages+=(strongswan-charon strongswan-swanctl libcharon-extra-plugins libstrongswan-extra-plugins libstrongswan-standard-plugins)
if [ ${#apt_packages[@]} -gt 0 ]; then
  say "apt-get install ${apt_packages[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  as_root apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
fi

if ! python3 -c 'import scapy, cryptography, prometheus_client; assert scapy.VERSION == "2.8.0"' 2>/dev/null; then
  say "pip install -r scripts/requirements.txt"
  pip=(python3 -m pip install -q --disable-pip-version-check -r scripts/requirements.txt)
  # Debian's own python3 is "externally managed" (PEP 668); these are
  # test tools for this machine, so install them there anyway.
  "${pip[@]}" 2>/dev/null || "${pip[@]}" --break-system-packages
fi

if [ "${1:-}" = "--fuzz" ]; then
  if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    say "rustup toolchain install nightly (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal
  fi
  if ! cargo fuzz --version >/dev/null 2>&1; then
    say "cargo install cargo-fuzz (once; takes a minute or two)"
    cargo install -q cargo-fuzz --locked
  fi
fi
