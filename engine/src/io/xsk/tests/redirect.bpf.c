// SPDX-License-Identifier: MIT OR Apache-2.0
// The XDP programs the AF_XDP tests attach (the real steering program is
// the ebpf crate's): `redirect` sends every frame of a queue to the socket
// at that queue's index of `xsks` (or to the kernel if there is none);
// `pass` gives every frame to the kernel, for the far end of a veth, which
// native XDP needs to deliver frames into it.
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

SEC("xdp")
int redirect(struct xdp_md *ctx)
{
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

SEC("xdp")
int pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
