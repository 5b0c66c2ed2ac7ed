#!/usr/bin/env python3
# SPDX-License-Identifier: MIT OR Apache-2.0
"""Check vpngw's ESP tunnel-mode encapsulation with Scapy, an independent
RFC 4303 implementation.

Given the inner packets that ``vpngw-pcap encap`` read (PLAIN.pcap) and the
ESP packets it wrote (ESP.pcap), decrypt every ESP packet with a Scapy
SecurityAssociation and require, per packet: the exact inner bytes back; the
given outer addresses, SPI and sequence number (packet i carries SEQ+i); on
outer IPv4, DF copied from an IPv4 inner packet (set for IPv6) and the ID equal
to the sequence number's low 16 bits; ESP
(protocol 50) or, with --natt, UDP on the given ports with a zero checksum over
IPv4 and a valid non-zero one over IPv6; a valid outer IPv4 header checksum and
a non-zero TTL / hop limit; outer DSCP and ECN equal to the inner ones (RFC
6040 normal mode); RFC 4303 default padding (1, 2, 3, ...) of the minimum
length; next header 4 (IPv4) or 41 (IPv6); on Ethernet, the input's MAC
addresses and an ethertype matching the outer IP version.

Usage:
  scapy_check_encap.py --suite aes-gcm-128 --key HEX --spi 0x1001 \\
      --src 192.0.2.1 --dst 198.51.100.1 [--natt 4500:4500] [--esn] [--seq N] \\
      PLAIN.pcap ESP.pcap
  scapy_check_encap.py --self-test

Exit status: 0 every packet passed and the counts match, 1 otherwise, 2 bad
usage or unreadable input.
"""

import argparse
import contextlib
import io
import ipaddress
import os
import struct
import sys
import tempfile

from scapy.layers.inet import IP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.ipsec import ESP, IPSecIntegrityError, SecurityAssociation
from scapy.utils import RawPcapReader

# suite name -> (Scapy crypt_algo, key length, Scapy auth_algo or None for an
# AEAD). AEAD keying material is key || 4-byte salt; AES-CBC's is encryption
# key || 32-byte HMAC-SHA-256 key.
SUITES = {
    "aes-gcm-128": ("AES-GCM", 16, None),
    "aes-gcm-256": ("AES-GCM", 32, None),
    "chacha20-poly1305": ("CHACHA20-POLY1305", 32, None),
    "aes-cbc-128-hmac-sha256": ("AES-CBC", 16, "SHA2-256-128"),
    "aes-cbc-256-hmac-sha256": ("AES-CBC", 32, "SHA2-256-128"),
}
SALT_LEN = 4
HMAC_KEY_LEN = 32
ICV_LEN = 16


def is_aead(suite):
    return SUITES[suite][2] is None


def iv_len(suite):
    return 8 if is_aead(suite) else 16


def block_len(suite):
    """RFC 4303 2.4: payload, padding and trailer align to 4, or to the
    cipher's block."""
    return 4 if is_aead(suite) else 16


def sa_keys(suite, keymat):
    """Scapy's SecurityAssociation key arguments for the keying material."""
    if is_aead(suite):
        return dict(crypt_algo=SUITES[suite][0], crypt_key=keymat)
    n = SUITES[suite][1]
    return dict(crypt_algo=SUITES[suite][0], crypt_key=keymat[:n],
                auth_algo=SUITES[suite][2], auth_key=keymat[n:])
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
ETHERTYPES = {4: 0x0800, 6: 0x86DD}


class Usage(Exception):
    """Bad command line or unreadable input: exit status 2."""


class Fail(Exception):
    """One packet failed a check."""


# --------------------------------------------------------------------------
# Helpers independent of Scapy (checksums, header fields)
# --------------------------------------------------------------------------

def inet_sum(data):
    """RFC 1071 one's-complement sum, folded to 16 bits."""
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def ip_length(ip):
    """Length an IPv4/IPv6 packet claims for itself (header included)."""
    if ip[0] >> 4 == 4:
        return struct.unpack("!H", ip[2:4])[0]
    return 40 + struct.unpack("!H", ip[4:6])[0]


def traffic_class(ip):
    """DSCP|ECN byte of an IPv4 (TOS) or IPv6 (traffic class) header."""
    if ip[0] >> 4 == 4:
        return ip[1]
    return ((ip[0] & 0x0F) << 4) | (ip[1] >> 4)


def integer(text):
    """Integer in decimal or 0x-hex."""
    return int(text, 0)


def parse_key(text, suite):
    """Hex keying material, with or without 0x; checked against the suite."""
    hex_text = text[2:] if text.lower().startswith("0x") else text
    try:
        key = bytes.fromhex(hex_text)
    except ValueError:
        raise Usage("--key is not hex")
    if is_aead(suite):
        want, parts = SUITES[suite][1] + SALT_LEN, "key || 4-byte salt"
    else:
        want, parts = SUITES[suite][1] + HMAC_KEY_LEN, "encryption key || 32-byte HMAC key"
    if len(key) != want:
        raise Usage("--key for %s must be %d bytes (%s), got %d"
                    % (suite, want, parts, len(key)))
    return key


def parse_natt(text):
    try:
        sport, dport = (int(p) for p in text.split(":"))
    except ValueError:
        raise Usage("--natt must be SPORT:DPORT")
    if not (0 < sport < 65536 and 0 < dport < 65536):
        raise Usage("--natt ports must be 1..65535")
    return sport, dport


def read_pcap(path):
    """(linktype, [frame bytes]) from a pcap file."""
    try:
        with RawPcapReader(path) as reader:
            frames = [bytes(data) for data, _meta in reader]
            return reader.linktype, frames
    except Exception as err:  # OSError, or Scapy_Exception for a non-pcap file
        raise Usage("cannot read %s: %s" % (path, err))


# --------------------------------------------------------------------------
# The per-packet check
# --------------------------------------------------------------------------

class Checker:
    """Holds the SA parameters and checks one (plain, esp) frame pair."""

    def __init__(self, suite, key, spi, src, dst, natt, esn, first_seq, linktype):
        self.suite = suite
        self.iv_len, self.block = iv_len(suite), block_len(suite)
        self.key, self.spi, self.natt, self.esn = key, spi, natt, esn
        self.src, self.dst = ipaddress.ip_address(src), ipaddress.ip_address(dst)
        self.version = self.src.version
        self.first_seq, self.linktype = first_seq, linktype

    def sa(self, high):
        """A receiving Scapy SA for the given ESN high half."""
        if self.version == 4:
            tunnel = IP(src=str(self.src), dst=str(self.dst))
        else:
            tunnel = IPv6(src=str(self.src), dst=str(self.dst))
        nat_t = UDP(sport=self.natt[0], dport=self.natt[1]) if self.natt else None
        return SecurityAssociation(ESP, spi=self.spi, tunnel_header=tunnel,
                                   nat_t_header=nat_t, esn_en=self.esn, esn=high,
                                   **sa_keys(self.suite, self.key))

    def scapy_packet(self, outer):
        """Fresh Scapy parse of the outer packet with the ESP layer exposed
        (Scapy's decrypt mutates packets, so every use re-parses)."""
        pkt = IP(outer) if self.version == 4 else IPv6(outer)
        if self.natt:
            pkt[UDP].decode_payload_as(ESP)
        return pkt

    def unlink(self, frame, what):
        """Strip the link header; returns (ethernet header or None, IP bytes)."""
        if self.linktype == LINKTYPE_RAW:
            return None, frame
        if len(frame) < 14:
            raise Fail("%s frame shorter than an Ethernet header" % what)
        return frame[:14], frame[14:]

    def check(self, index, plain_frame, esp_frame):
        """Raise Fail with a reason unless the ESP frame is a correct
        encapsulation of the plain frame as packet ``index``."""
        plain_eth, inner = self.unlink(plain_frame, "plain")
        esp_eth, outer = self.unlink(esp_frame, "ESP")
        if not inner or inner[0] >> 4 not in (4, 6):
            raise Fail("plain packet is not IPv4/IPv6")
        inner_version = inner[0] >> 4
        # The input may carry Ethernet padding: the inner packet is what its
        # IP header says.
        inner = inner[:ip_length(inner)]

        if esp_eth is not None:
            if esp_eth[:12] != plain_eth[:12]:
                raise Fail("Ethernet MACs %s differ from the input's %s"
                           % (esp_eth[:12].hex(), plain_eth[:12].hex()))
            ethertype = struct.unpack("!H", esp_eth[12:14])[0]
            if ethertype != ETHERTYPES[self.version]:
                raise Fail("ethertype 0x%04x, outer is IPv%d" % (ethertype, self.version))

        payload, proto = self.check_outer_ip(outer)
        if proto != (17 if self.natt else 50):
            raise Fail("outer protocol %d, expected %d" % (proto, 17 if self.natt else 50))
        esp = self.check_udp(outer, payload) if self.natt else payload

        seq = self.first_seq + index
        if not self.esn and seq > 0xFFFFFFFF:
            raise Fail("sequence %#x does not fit 32 bits and --esn is off" % seq)
        if len(esp) < 8 + self.iv_len + ICV_LEN:
            raise Fail("ESP payload only %d bytes" % len(esp))
        spi, wire_seq = struct.unpack("!II", esp[:8])
        if spi != self.spi:
            raise Fail("SPI %#x, expected %#x" % (spi, self.spi))
        if wire_seq != seq & 0xFFFFFFFF:
            raise Fail("wire sequence %#x, expected %#x" % (wire_seq, seq & 0xFFFFFFFF))

        sa = self.sa(seq >> 32)
        # The ESP trailer, from Scapy's cipher layer (the SA hides it).
        esp_layer = self.scapy_packet(outer)[ESP]
        try:
            # AES-CBC: HMAC first (encrypt-then-MAC); the AEADs verify as
            # they decrypt.
            sa.auth_algo.verify(esp_layer, sa.auth_key, esn_en=sa.esn_en, esn=sa.esn)
            plain = sa.crypt_algo.decrypt(sa, esp_layer, sa.crypt_key, ICV_LEN,
                                          esn_en=sa.esn_en, esn=sa.esn)
        except IPSecIntegrityError:
            raise Fail("ICV check failed (Scapy cannot authenticate the packet)")
        ciphertext_len = len(esp) - 8 - self.iv_len - ICV_LEN
        if plain.padlen + 2 > ciphertext_len:
            raise Fail("pad length %d exceeds the payload" % plain.padlen)
        want_nh = 4 if inner_version == 4 else 41
        if plain.nh != want_nh:
            raise Fail("next header %d, expected %d" % (plain.nh, want_nh))

        # Full tunnel-mode decryption through the SA.
        decrypted = bytes(sa.decrypt(self.scapy_packet(outer)))
        if decrypted != inner:
            raise Fail("decrypted inner packet (%d bytes) differs from the plain packet (%d bytes)"
                       % (len(decrypted), len(inner)))

        want_pad = -(len(inner) + 2) % self.block
        if plain.padlen != want_pad or ciphertext_len != len(inner) + want_pad + 2:
            raise Fail("pad length %d, expected the minimum %d (payload %d bytes, inner %d)"
                       % (plain.padlen, want_pad, ciphertext_len, len(inner)))
        if plain.padding != bytes(range(1, want_pad + 1)):
            raise Fail("pad bytes %s, expected 1, 2, 3, ..." % plain.padding.hex())

        outer_tc, inner_tc = traffic_class(outer), traffic_class(inner)
        if outer_tc >> 2 != inner_tc >> 2:
            raise Fail("outer DSCP %d, inner DSCP %d" % (outer_tc >> 2, inner_tc >> 2))
        if outer_tc & 3 != inner_tc & 3:
            raise Fail("outer ECN %d, inner ECN %d" % (outer_tc & 3, inner_tc & 3))

        if self.version == 4:
            # vpngw's choices (docs/ARCHITECTURE.md): DF copied from an IPv4
            # inner packet and set for IPv6; the ID is the sequence number's
            # low 16 bits.
            inner_df = inner_version == 6 or bool(struct.unpack("!H", inner[6:8])[0] & 0x4000)
            outer_df = bool(struct.unpack("!H", outer[6:8])[0] & 0x4000)
            if outer_df != inner_df:
                raise Fail("outer DF %d, expected %d" % (outer_df, inner_df))
            ident = struct.unpack("!H", outer[4:6])[0]
            if ident != seq & 0xFFFF:
                raise Fail("outer IPv4 ID %#x, expected %#x (sequence number's low 16 bits)"
                           % (ident, seq & 0xFFFF))

    def check_outer_ip(self, outer):
        """Validate the outer IP header; returns (payload, protocol)."""
        if not outer or outer[0] >> 4 != self.version:
            raise Fail("outer is not IPv%d" % self.version)
        if self.version == 4:
            if len(outer) < 20:
                raise Fail("outer IPv4 header truncated")
            ihl = (outer[0] & 0x0F) * 4
            if ihl < 20 or len(outer) < ihl:
                raise Fail("bad outer IHL %d" % ihl)
            if inet_sum(outer[:ihl]) != 0xFFFF:
                raise Fail("outer IPv4 header checksum invalid")
            if struct.unpack("!H", outer[6:8])[0] & 0x3FFF:
                raise Fail("outer IPv4 packet is a fragment")
            ttl, proto = outer[8], outer[9]
            src, dst = outer[12:16], outer[16:20]
            header_len = ihl
        else:
            if len(outer) < 40:
                raise Fail("outer IPv6 header truncated")
            ttl, proto = outer[7], outer[6]
            src, dst = outer[8:24], outer[24:40]
            header_len = 40
        if ip_length(outer) != len(outer):
            raise Fail("outer length field %d, packet %d bytes" % (ip_length(outer), len(outer)))
        if ttl == 0:
            raise Fail("outer TTL/hop limit is 0")
        if (ipaddress.ip_address(src), ipaddress.ip_address(dst)) != (self.src, self.dst):
            raise Fail("outer %s -> %s, expected %s -> %s"
                       % (ipaddress.ip_address(src), ipaddress.ip_address(dst),
                          self.src, self.dst))
        return outer[header_len:], proto

    def check_udp(self, outer, udp):
        """Validate the NAT-T UDP header; returns the ESP bytes."""
        if len(udp) < 8:
            raise Fail("UDP header truncated")
        sport, dport, length, checksum = struct.unpack("!HHHH", udp[:8])
        if (sport, dport) != self.natt:
            raise Fail("UDP ports %d:%d, expected %d:%d" % (sport, dport, *self.natt))
        if length != len(udp):
            raise Fail("UDP length %d, datagram %d bytes" % (length, len(udp)))
        if self.version == 4:
            if checksum != 0:
                raise Fail("UDP checksum %#06x over IPv4, expected 0 (RFC 3948)" % checksum)
        else:
            if checksum == 0:
                raise Fail("UDP checksum 0 over IPv6 (RFC 8200 requires one)")
            pseudo = outer[8:40] + struct.pack("!IxxxB", len(udp), 17)
            if inet_sum(pseudo + udp) != 0xFFFF:
                raise Fail("UDP checksum %#06x over IPv6 is invalid" % checksum)
        if udp[8:12] == b"\0\0\0\0":
            raise Fail("UDP payload starts with the non-ESP marker")
        return udp[8:]


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------

def build_parser():
    parser = argparse.ArgumentParser(
        description="Check vpngw ESP tunnel-mode output with Scapy.")
    parser.add_argument("--self-test", action="store_true",
                        help="check this checker against Scapy's own ESP output")
    parser.add_argument("--suite", choices=sorted(SUITES))
    parser.add_argument("--key", help="hex key || 4-byte salt (0x optional)")
    parser.add_argument("--spi", type=integer, help="SPI, decimal or 0x-hex")
    parser.add_argument("--src", help="outer source address")
    parser.add_argument("--dst", help="outer destination address")
    parser.add_argument("--natt", help="ESP-in-UDP with SPORT:DPORT")
    parser.add_argument("--esn", action="store_true", help="extended sequence numbers")
    parser.add_argument("--seq", type=integer, default=1,
                        help="first sequence number (64-bit, default 1)")
    parser.add_argument("plain", nargs="?", metavar="PLAIN.pcap")
    parser.add_argument("esp", nargs="?", metavar="ESP.pcap")
    return parser


def run(args):
    """Check the two pcaps; returns the exit status."""
    missing = [name for name in ("suite", "key", "spi", "src", "dst", "plain", "esp")
               if getattr(args, name) is None]
    if missing:
        raise Usage("missing " + ", ".join(missing))
    key = parse_key(args.key, args.suite)
    natt = parse_natt(args.natt) if args.natt else None
    try:
        src, dst = ipaddress.ip_address(args.src), ipaddress.ip_address(args.dst)
    except ValueError as err:
        raise Usage(str(err))
    if src.version != dst.version:
        raise Usage("--src and --dst must be the same IP version")
    if not 0 <= args.spi <= 0xFFFFFFFF or not 1 <= args.seq < 2**64:
        raise Usage("--spi must fit 32 bits and --seq must be 1..2^64-1")

    plain_linktype, plain_frames = read_pcap(args.plain)
    esp_linktype, esp_frames = read_pcap(args.esp)
    if plain_linktype not in (LINKTYPE_ETHERNET, LINKTYPE_RAW):
        raise Usage("%s: linktype %d, expected 1 or 101" % (args.plain, plain_linktype))
    if esp_linktype != plain_linktype:
        print("FAIL: ESP pcap linktype %d differs from the input's %d"
              % (esp_linktype, plain_linktype))
        return 1

    checker = Checker(args.suite, key, args.spi, args.src, args.dst, natt,
                      args.esn, args.seq, plain_linktype)
    passed = 0
    for i, (plain_frame, esp_frame) in enumerate(zip(plain_frames, esp_frames)):
        try:
            checker.check(i, plain_frame, esp_frame)
        except Fail as err:
            print("%d FAIL: %s" % (i, err))
        except Exception as err:  # garbage Scapy could not dissect or decrypt
            print("%d FAIL: unparseable packet (%s: %s)" % (i, type(err).__name__, err))
        else:
            print("%d ok" % i)
            passed += 1
    counts_match = len(plain_frames) == len(esp_frames)
    print("%d/%d packets ok%s" % (
        passed, len(plain_frames),
        "" if counts_match else "; FAIL: %d plain packets but %d ESP packets"
        % (len(plain_frames), len(esp_frames))))
    return 0 if counts_match and passed == len(plain_frames) else 1


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)  # exits 2 on malformed options
    try:
        if args.self_test:
            return self_test()
        return run(args)
    except Usage as err:
        parser.print_usage(sys.stderr)
        print("error: %s" % err, file=sys.stderr)
        return 2


# --------------------------------------------------------------------------
# Self-test: Scapy encrypts, the checker must accept; tampering must fail
# --------------------------------------------------------------------------

def self_test():
    """Encrypt packets with Scapy, check them through main(); every clean
    scenario must pass and every tampered variant must fail."""
    from scapy.layers.inet import ICMP
    from scapy.layers.inet6 import ICMPv6EchoRequest
    from scapy.layers.ipsec import _ESPPlain
    from scapy.layers.l2 import Ether
    from scapy.packet import Raw

    def inner_packets():
        """IPv4 and IPv6 inner packets of lengths hitting every pad length,
        with assorted DSCP/ECN values."""
        pkts = []
        for i in range(8):
            tos = (0x00, 0xB8, 0x02, 0x29, 0x8A, 0x03, 0x01, 0x48)[i]
            if i % 2 == 0:
                ip = IP(src="10.1.0.10", dst="172.16.1.20", tos=tos, id=i) / ICMP(seq=i)
            else:
                ip = IPv6(src="fd00:1::10", dst="fd00:16:1::20", tc=tos) / ICMPv6EchoRequest(seq=i)
            pkts.append(bytes(ip / Raw(b"x" * (20 + i))))
        return pkts

    def encrypt(sc, inner, seq, extra_pad=0):
        """Scapy's encapsulation of one inner packet as packet seq. With
        extra_pad, build the trailer by hand with that many extra pad bytes."""
        if sc["src"].count(":"):
            tunnel = IPv6(src=sc["src"], dst=sc["dst"], tc=traffic_class(inner))
        else:
            df = inner[0] >> 4 == 6 or bool(struct.unpack("!H", inner[6:8])[0] & 0x4000)
            tunnel = IP(src=sc["src"], dst=sc["dst"], tos=traffic_class(inner), id=seq & 0xFFFF,
                        flags="DF" if df else 0)
        natt = UDP(sport=sc["natt"][0], dport=sc["natt"][1]) if sc.get("natt") else None
        sa = SecurityAssociation(ESP, spi=sc["spi"], seq_num=seq & 0xFFFFFFFF,
                                 tunnel_header=tunnel, nat_t_header=natt,
                                 esn_en=sc.get("esn", False), esn=seq >> 32,
                                 **sa_keys(sc["suite"], sc["key"]))
        pkt = IP(inner) if inner[0] >> 4 == 4 else IPv6(inner)
        iv = struct.pack("!Q", seq) * (iv_len(sc["suite"]) // 8)
        out = sa.encrypt(pkt, iv=iv)
        if extra_pad:
            # Replace the ESP payload with one carrying non-minimal padding.
            pad_len = -(len(inner) + 2) % block_len(sc["suite"]) + extra_pad
            esp = _ESPPlain(spi=sc["spi"], seq=seq & 0xFFFFFFFF, iv=iv, data=Raw(inner),
                            padding=bytes(range(1, pad_len + 1)), padlen=pad_len,
                            nh=4 if inner[0] >> 4 == 4 else 41)
            sealed = sa.crypt_algo.encrypt(sa, esp, sa.crypt_key, ICV_LEN,
                                           esn_en=sa.esn_en, esn=sa.esn)
            sealed = sa.auth_algo.sign(sealed, sa.auth_key, esn_en=sa.esn_en, esn=sa.esn)
            out[ESP].data = sealed.data
            if out.version == 4:
                del out.len, out.chksum
            else:
                del out.plen
            out = out.__class__(bytes(out))
        if natt and out.version == 6:
            # Scapy writes a zero UDP checksum even over IPv6; fix it as a
            # correct sender (and vpngw) must.
            del out[UDP].chksum
            out = IPv6(bytes(out))
        return bytes(out)

    def frame(sc, ip_bytes):
        if not sc.get("ethernet"):
            return ip_bytes
        return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02",
                           type=ETHERTYPES[ip_bytes[0] >> 4])) + ip_bytes

    def write(path, sc, frames):
        """Classic pcap with the scenario's linktype."""
        linktype = LINKTYPE_ETHERNET if sc.get("ethernet") else LINKTYPE_RAW
        with open(path, "wb") as f:
            f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype))
            for i, data in enumerate(frames):
                f.write(struct.pack("<IIII", i, 0, len(data), len(data)) + data)

    def argv(sc, plain, esp, **override):
        opts = dict(sc, **override)
        out = ["--suite", opts["suite"], "--key", opts["key"].hex(), "--spi", hex(opts["spi"]),
               "--src", opts["src"], "--dst", opts["dst"], "--seq", str(opts.get("seq", 1))]
        if opts.get("natt"):
            out += ["--natt", "%d:%d" % opts["natt"]]
        if opts.get("esn"):
            out.append("--esn")
        return out + [plain, esp]

    key16 = bytes(range(16)) + b"SALT"
    key32 = bytes(range(32, 64)) + b"salt"
    key_cbc128 = bytes(range(64, 80)) + bytes(range(100, 132))
    key_cbc256 = bytes(range(140, 172)) + bytes(range(180, 212))
    scenarios = [
        dict(name="gcm128 v4 raw", suite="aes-gcm-128", key=key16, spi=0x1001,
             src="192.0.2.1", dst="198.51.100.1"),
        dict(name="gcm256 v6 ethernet natt", suite="aes-gcm-256", key=key32, spi=0x2002,
             src="2001:db8::1", dst="2001:db8:1::1", natt=(4500, 4500), ethernet=True),
        dict(name="chacha v4 natt 31000:4501 esn across 2^32", suite="chacha20-poly1305",
             key=key32, spi=0x3003, src="192.0.2.1", dst="198.51.100.1",
             natt=(31000, 4501), esn=True, seq=0xFFFFFFFD, ethernet=True),
        dict(name="chacha v6 esn high half 1", suite="chacha20-poly1305", key=key32,
             spi=0x4004, src="2001:db8::1", dst="2001:db8:1::1", esn=True,
             seq=0x100000005),
        dict(name="cbc128 v4 raw", suite="aes-cbc-128-hmac-sha256", key=key_cbc128, spi=0x5005,
             src="192.0.2.1", dst="198.51.100.1"),
        dict(name="cbc256 v6 ethernet natt esn across 2^32", suite="aes-cbc-256-hmac-sha256",
             key=key_cbc256, spi=0x6006, src="2001:db8::1", dst="2001:db8:1::1",
             natt=(4500, 4500), ethernet=True, esn=True, seq=0xFFFFFFFD),
    ]

    def flip(b, offset):
        b = bytearray(b)
        b[offset] ^= 1
        return bytes(b)

    def bump_tos(b):
        # Raw outer IPv4: change the ECN bits and fix the header checksum.
        pkt = IP(b)
        pkt.tos ^= 0x01
        del pkt.chksum
        return bytes(pkt)

    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        plain_path = os.path.join(tmp, "plain.pcap")
        esp_path = os.path.join(tmp, "esp.pcap")

        def expect(label, want, sc, esp_frames, plain_frames, **override):
            nonlocal failures
            write(plain_path, sc, plain_frames)
            write(esp_path, sc, esp_frames)
            out = io.StringIO()
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                got = main(argv(sc, plain_path, esp_path, **override))
            good = got == want
            failures += not good
            reason = next((line for line in out.getvalue().splitlines() if "FAIL" in line),
                          out.getvalue().strip().splitlines()[-1])
            print("self-test %-52s exit %d (want %d) %s  [%s]"
                  % (label, got, want, "ok" if good else "WRONG", reason))
            if not good:
                print(out.getvalue())

        inners = inner_packets()

        def clean(sc):
            """(plain frames, ESP frames) for a scenario, as Scapy encrypts them."""
            first = sc.get("seq", 1)
            return ([frame(sc, p) for p in inners],
                    [frame(sc, encrypt(sc, p, first + i)) for i, p in enumerate(inners)])

        for sc in scenarios:
            plain, esp = clean(sc)
            expect(sc["name"], 0, sc, esp, plain)

        # Tampered variants: each must fail.
        sc = scenarios[0]  # IPv4 outer, raw IP
        plain, esp = clean(sc)
        expect("tamper: ciphertext byte flipped", 1, sc,
               esp[:2] + [flip(esp[2], -ICV_LEN - 1)] + esp[3:], plain)
        expect("tamper: outer IPv4 header checksum", 1, sc, [flip(esp[0], 11)] + esp[1:], plain)
        expect("tamper: outer ECN differs from inner", 1, sc,
               [bump_tos(esp[0])] + esp[1:], plain)
        expect("tamper: one ESP packet missing", 1, sc, esp[:-1], plain)
        expect("tamper: wrong --seq", 1, sc, esp, plain, seq=2)
        expect("tamper: wrong --spi", 1, sc, esp, plain, spi=0x1002)
        expect("tamper: wrong --src", 1, sc, esp, plain, src="192.0.2.2")
        expect("tamper: non-minimal padding (1..n+4)", 1, sc,
               [frame(sc, encrypt(sc, inners[0], 1, extra_pad=4))] + esp[1:], plain)
        expect("tamper: inner payload byte differs", 1, sc, esp, [flip(plain[0], -1)] + plain[1:])

        sc = scenarios[1]  # IPv6 outer, Ethernet, NAT-T
        plain, esp = clean(sc)
        udp_checksum = 14 + 40 + 6
        zero_sum = [f[:udp_checksum] + b"\0\0" + f[udp_checksum + 2:] for f in esp]
        expect("tamper: IPv6 NAT-T with zero UDP checksum", 1, sc, zero_sum, plain)
        expect("tamper: ethertype IPv4 on an IPv6 outer", 1, sc,
               [esp[0][:12] + b"\x08\x00" + esp[0][14:]] + esp[1:], plain)
        expect("usage: key of the wrong length", 2, sc, esp, plain, suite="aes-gcm-128")

        sc = scenarios[2]  # ESN across 2^32
        plain, esp = clean(sc)
        expect("tamper: ESN not signalled", 1, sc, esp, plain, esn=False)

        sc = scenarios[4]  # AES-CBC with HMAC-SHA2-256-128
        plain, esp = clean(sc)
        expect("tamper: CBC ICV byte flipped", 1, sc, esp[:1] + [flip(esp[1], -1)] + esp[2:], plain)
        expect("tamper: CBC ciphertext byte flipped", 1, sc, [flip(esp[0], -ICV_LEN - 1)] + esp[1:], plain)
        expect("tamper: CBC padding one block more", 1, sc,
               [frame(sc, encrypt(sc, inners[0], 1, extra_pad=16))] + esp[1:], plain)
        sc = scenarios[5]  # AES-CBC, ESN across 2^32
        plain, esp = clean(sc)
        expect("tamper: CBC ESN not signalled", 1, sc, esp, plain, esn=False)

    print("self-test %s" % ("passed" if failures == 0 else "FAILED (%d)" % failures))
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
