// SPDX-License-Identifier: MIT OR Apache-2.0
//
// vpngw's XDP steering: on each of the gateway's ports it decides, per frame,
// whether the engine (an AF_XDP socket on the receiving queue) or the kernel
// (XDP_PASS) gets it. The kernel stays the slow path (ARP, neighbour
// discovery, ICMP to the host, IKE sockets, ssh); the engine is the fast path.
//
// Two programs, one per port role, share the parser; the loader loads and
// attaches only the one its port needs, so the role is a compile-time
// constant the verifier prunes, and `ip link` names the role in use:
//
//   steer_outside  ESP (IP protocol 50) and ESP-in-UDP (UDP destination port
//                  4500 whose first four payload bytes are not the zero
//                  non-ESP marker, RFC 3948 section 2.2) addressed to one of
//                  the gateway's addresses go to the engine. IKE (UDP 500,
//                  UDP 4500 with the marker), NAT keepalives (UDP 4500, one
//                  byte 0xff, RFC 3948 section 2.3), ARP, ICMP and
//                  everything else go to the kernel.
//   steer_inside   IPv4 and IPv6 not addressed to the gateway's own (inside)
//                  addresses is to be forwarded: it goes to the engine. ARP,
//                  neighbour discovery (ICMPv6 133-137), broadcast, multicast
//                  and link-local destinations, and traffic for the
//                  gateway's own addresses go to the kernel.
//
// What is parsed, and what is not:
// - One VLAN tag (802.1Q or 802.1ad) is skipped; a second one is not, so a
//   double-tagged frame counts as not-IP and goes to the kernel. (A NIC that
//   strips tags on receive hands XDP an untagged frame anyway.)
// - IPv4 options are skipped (the header length is read).
// - IPv6: only the first header after the fixed header is looked at. ESP or
//   UDP behind extension headers goes to the kernel, which has no ESP here
//   and drops it: peers do not send ESP that way in practice. A fragment
//   header counts as a fragment.
// - Outside, fragmented UDP (IPv4 MF or offset, or an IPv6 fragment header)
//   goes to the kernel, which reassembles it: large IKE messages are often
//   fragmented at the IP layer. ESP fragments go to the engine, which counts
//   them as dropped (it does not reassemble).
// - Truncated headers go to the kernel, which drops and counts them.
//
// A redirect to a queue with no socket in `xsks` falls back to XDP_PASS and
// is counted as no-socket on top of its reason.
//
// Every decision is counted in the per-CPU array `counters`, one slot per
// reason below. The numbering is shared with `Reason` in ../src/lib.rs:
// change both together.

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

enum reason {
	REASON_ESP = 0,           // outside: ESP to a gateway address
	REASON_ESP_IN_UDP = 1,    // outside: ESP in UDP 4500 to a gateway address
	REASON_FORWARD = 2,       // inside: to be forwarded
	REASON_NO_SOCKET = 3,     // a redirect found no socket: passed instead
	REASON_NOT_IP = 4,        // ARP, LLDP, anything but IPv4 and IPv6
	REASON_IKE = 5,           // outside: UDP 500, UDP 4500 with the marker
	REASON_NAT_KEEPALIVE = 6, // outside: UDP 4500, one byte 0xff
	REASON_LOCAL = 7,         // to a gateway address, for the host itself
	REASON_NOT_OURS = 8,      // outside: not to a gateway address
	REASON_CONTROL = 9,       // inside: ND, broadcast, multicast, link-local
	REASON_FRAGMENT = 10,     // outside: a UDP (or IPv6) fragment
	REASON_MALFORMED = 11,    // a truncated or impossible header
	REASON_COUNT = 12,
};

// The key of `gateway_addrs`: family 4 or 6, then the address in network
// order (an IPv4 address in the first 4 bytes, the rest zero). The loader
// builds the same 20 bytes (`addr_key` in ../src/lib.rs).
struct addr_key {
	__u8 family;
	__u8 pad[3];
	__u8 addr[16];
};

// The maximum number of receive queues a port can have sockets on.
#define MAX_QUEUES 64

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, MAX_QUEUES);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, struct addr_key);
	__type(value, __u32); // flags, none defined yet: written as 0
} gateway_addrs SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, REASON_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

enum role { ROLE_OUTSIDE, ROLE_INSIDE };

#define IPPROTO_ESP_ 50 // <linux/in.h> has IPPROTO_ESP in an enum; keep ours
#define NEXTHDR_FRAGMENT 44
#define IKE_PORT 500
#define NAT_T_PORT 4500
#define ICMPV6_ROUTER_SOLICIT 133
#define ICMPV6_REDIRECT 137

struct vlan_tag {
	__be16 tci;
	__be16 proto;
};

// What the parser found out about an IP packet.
struct packet {
	struct addr_key dst;
	__u8 l4proto;     // IPv4 protocol, or the first IPv6 next header
	__u8 fragment;    // IPv4 MF or offset set, or an IPv6 fragment header
	__u8 dst_special; // broadcast, multicast or link-local destination
	void *l4;         // the upper-layer header (IPv6: the first header)
};

static __always_inline void count(__u32 reason)
{
	__u64 *slot = bpf_map_lookup_elem(&counters, &reason);
	if (slot)
		*slot += 1; // per-CPU slot: no other writer
}

static __always_inline int pass(__u32 reason)
{
	count(reason);
	return XDP_PASS;
}

static __always_inline int to_engine(struct xdp_md *ctx, __u32 reason)
{
	count(reason);
	long action = bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
	if (action != XDP_REDIRECT)
		count(REASON_NO_SOCKET);
	return action;
}

static __always_inline int is_gateway_addr(struct addr_key *key)
{
	return bpf_map_lookup_elem(&gateway_addrs, key) != 0;
}

// Returns 0 and fills `pkt` for a well-formed IPv4 header, -1 otherwise.
static __always_inline int parse_ipv4(void *l3, void *end, struct packet *pkt)
{
	struct iphdr *ip = l3;
	if ((void *)(ip + 1) > end)
		return -1;
	if (ip->version != 4 || ip->ihl < 5)
		return -1;
	__u8 *dst = (__u8 *)&ip->daddr;
	pkt->dst.family = 4;
	__builtin_memcpy(pkt->dst.addr, dst, 4);
	pkt->l4proto = ip->protocol;
	pkt->fragment = (ip->frag_off & bpf_htons(0x3fff)) != 0; // MF | offset
	pkt->dst_special = dst[0] >= 224 || (dst[0] == 169 && dst[1] == 254); // multicast, broadcast, 169.254/16
	pkt->l4 = l3 + ip->ihl * 4;
	return 0;
}

// Returns 0 and fills `pkt` for a well-formed IPv6 fixed header, -1 otherwise.
static __always_inline int parse_ipv6(void *l3, void *end, struct packet *pkt)
{
	struct ipv6hdr *ip6 = l3;
	if ((void *)(ip6 + 1) > end)
		return -1;
	if (ip6->version != 6)
		return -1;
	__u8 *dst = ip6->daddr.in6_u.u6_addr8;
	pkt->dst.family = 6;
	__builtin_memcpy(pkt->dst.addr, dst, 16);
	pkt->l4proto = ip6->nexthdr;
	pkt->fragment = ip6->nexthdr == NEXTHDR_FRAGMENT;
	pkt->dst_special = dst[0] == 0xff || (dst[0] == 0xfe && (dst[1] & 0xc0) == 0x80); // multicast, fe80::/10
	pkt->l4 = ip6 + 1;
	return 0;
}

static __always_inline int steer_outside_ip(struct xdp_md *ctx, void *end, struct packet *pkt)
{
	if (!is_gateway_addr(&pkt->dst))
		return pass(REASON_NOT_OURS);
	if (pkt->l4proto == IPPROTO_ESP_)
		return to_engine(ctx, REASON_ESP);
	if (pkt->fragment)
		return pass(REASON_FRAGMENT);
	if (pkt->l4proto != IPPROTO_UDP)
		return pass(REASON_LOCAL);

	struct udphdr *udp = pkt->l4;
	if ((void *)(udp + 1) > end)
		return pass(REASON_MALFORMED);
	if (udp->dest == bpf_htons(IKE_PORT))
		return pass(REASON_IKE);
	if (udp->dest != bpf_htons(NAT_T_PORT))
		return pass(REASON_LOCAL);

	__u8 *payload = (__u8 *)(udp + 1);
	if ((void *)(payload + 1) > end)
		return pass(REASON_MALFORMED);
	if (udp->len == bpf_htons(sizeof(*udp) + 1) && payload[0] == 0xff)
		return pass(REASON_NAT_KEEPALIVE);
	if ((void *)(payload + 4) > end)
		return pass(REASON_MALFORMED);
	if ((payload[0] | payload[1] | payload[2] | payload[3]) == 0)
		return pass(REASON_IKE); // the non-ESP marker: IKE on 4500
	return to_engine(ctx, REASON_ESP_IN_UDP);
}

static __always_inline int steer_inside_ip(struct xdp_md *ctx, void *end, struct packet *pkt)
{
	if (pkt->dst_special)
		return pass(REASON_CONTROL);
	if (pkt->dst.family == 6 && pkt->l4proto == IPPROTO_ICMPV6) {
		__u8 *icmp_type = pkt->l4;
		if ((void *)(icmp_type + 1) > end)
			return pass(REASON_MALFORMED);
		if (*icmp_type >= ICMPV6_ROUTER_SOLICIT && *icmp_type <= ICMPV6_REDIRECT)
			return pass(REASON_CONTROL); // neighbour discovery, RFC 4861
	}
	if (is_gateway_addr(&pkt->dst))
		return pass(REASON_LOCAL);
	return to_engine(ctx, REASON_FORWARD);
}

static __always_inline int steer(struct xdp_md *ctx, enum role role)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;

	struct ethhdr *eth = data;
	if ((void *)(eth + 1) > end)
		return pass(REASON_MALFORMED);
	__be16 proto = eth->h_proto;
	void *l3 = eth + 1;
	if (proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD)) {
		struct vlan_tag *tag = l3;
		if ((void *)(tag + 1) > end)
			return pass(REASON_MALFORMED);
		proto = tag->proto;
		l3 = tag + 1;
	}

	struct packet pkt;
	__builtin_memset(&pkt, 0, sizeof(pkt)); // the key's padding must be zero
	int parsed;
	if (proto == bpf_htons(ETH_P_IP))
		parsed = parse_ipv4(l3, end, &pkt);
	else if (proto == bpf_htons(ETH_P_IPV6))
		parsed = parse_ipv6(l3, end, &pkt);
	else
		return pass(REASON_NOT_IP);
	if (parsed < 0)
		return pass(REASON_MALFORMED);

	if (role == ROLE_OUTSIDE)
		return steer_outside_ip(ctx, end, &pkt);
	return steer_inside_ip(ctx, end, &pkt);
}

SEC("xdp")
int steer_outside(struct xdp_md *ctx)
{
	return steer(ctx, ROLE_OUTSIDE);
}

SEC("xdp")
int steer_inside(struct xdp_md *ctx)
{
	return steer(ctx, ROLE_INSIDE);
}

// The licence the kernel is told. It decides which helpers the program may
// call: GPL-only ones need a GPL-compatible string. This program calls none
// (map lookups and bpf_redirect_map are not GPL-only), but "Dual MIT/GPL" is
// a string the kernel knows as GPL-compatible, so adding such a helper later
// does not fail at load time, and it names MIT, a licence this file is
// offered under.
char LICENSE[] SEC("license") = "Dual MIT/GPL";
