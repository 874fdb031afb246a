// SPDX-License-Identifier: Apache-2.0
//
// turnd's XDP program, step 1 of issue 18 (docs/xdp.md): it parses
// Ethernet / IPv4 / IPv6 / UDP and recognises ChannelData (RFC 8656 §12.4)
// sent to one of turnd's listen ports, counts what it sees per CPU, and
// passes every packet up with XDP_PASS. It relays nothing yet; the point of
// this step is a toolchain that compiles (clang -target bpf), verifies, loads
// and attaches end to end, and a parser whose verdicts the later relaying
// program will reuse.
//
// Build: clang -target bpf -O2 -g -Wall -c ebpf/turnd_xdp.c -o turnd_xdp.o
// (ebpf/smoke.sh builds it, attaches it in a network namespace and checks
// the counters).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

// Why each packet was counted. The user-space side folds these per-CPU
// counters into metrics; the numbers are part of the map's contract, so
// append, never renumber.
enum turnd_counter {
	// Every packet the program saw.
	TURND_SEEN = 0,
	// Not IPv4/IPv6 over plain Ethernet (ARP, VLAN tags, ...).
	TURND_PASS_NOT_IP = 1,
	// IP but not a UDP datagram the program can handle: other protocols,
	// IPv4 options, fragments, IPv6 extension headers.
	TURND_PASS_NOT_UDP = 2,
	// UDP, but not to a listen port.
	TURND_PASS_OTHER_PORT = 3,
	// To a listen port but not ChannelData (STUN messages, Send
	// indications: user space handles them).
	TURND_PASS_NOT_CHANNELDATA = 4,
	// ChannelData whose length field disagrees with the UDP payload.
	TURND_PASS_BAD_LENGTH = 5,
	// Well-formed ChannelData over IPv4 / IPv6 (relayed in a later step).
	TURND_CHANNELDATA_V4 = 6,
	TURND_CHANNELDATA_V6 = 7,
	TURND_COUNTER_MAX = 8,
};

struct turnd_count {
	__u64 packets;
	__u64 bytes;
};

// Per CPU so that counting takes no lock shared between cores; user space
// sums the CPUs' slots when it reads.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TURND_COUNTER_MAX);
	__type(key, __u32);
	__type(value, struct turnd_count);
} turnd_counters SEC(".maps");

// turnd's UDP listen ports (host byte order) -> 1. Written by user space at
// start-up; bounded by max_entries.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, __u16);
	__type(value, __u8);
} turnd_ports SEC(".maps");

// The fast path's state (docs/xdp.md, Maps), written by turnd's workers from the core's
// own decisions (src/core/fast_path.rs) and read here. Addresses are 16 bytes, an IPv4
// address in the first four with the rest zero, and `family` says which (4 or 6); ports are
// in network order, as the packet carries them. Each layout is mirrored in
// src/shell/xdp/maps.rs; the sizes are asserted on both sides. Append fields, never reorder.

// Client -> peer: ChannelData from `client` to the listen address `listen` on `channel`.
struct turnd_chan_in_key {
	__u8 client_ip[16];
	__u8 listen_ip[16];
	__be16 client_port;
	__be16 listen_port;
	__u16 channel; // host order
	__u8 family;
	__u8 pad;
};

// ... is sent from `relay` to `peer`.
struct turnd_chan_in_value {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u32 stats_slot; // index in turnd_alloc_stats
	__u64 expires_ns; // CLOCK_MONOTONIC (bpf_ktime_get_ns); past it, pass up
	__u8 family;
	__u8 dont_fragment;
	__u8 pad[6];
};

// Peer -> client: a datagram from `peer` to the relay address `relay` ...
struct turnd_chan_out_key {
	__u8 relay_ip[16];
	__u8 peer_ip[16];
	__be16 relay_port;
	__be16 peer_port;
	__u8 family;
	__u8 pad[3];
};

// ... goes to `client` from `listen` as ChannelData on `channel`.
struct turnd_chan_out_value {
	__u8 client_ip[16];
	__u8 listen_ip[16];
	__be16 client_port;
	__be16 listen_port;
	__u16 channel; // host order
	__u16 pad;
	__u32 stats_slot;
	__u32 pad2;
	__u64 expires_ns;
	__u8 family;
	__u8 pad3[7];
};

// One allocation's relayed payload, both directions (a slot per allocation).
struct turnd_alloc_stats {
	__u64 to_peer_packets;
	__u64 to_peer_bytes;
	__u64 to_client_packets;
	__u64 to_client_bytes;
};

_Static_assert(sizeof(struct turnd_chan_in_key) == 40, "chan_in key layout");
_Static_assert(sizeof(struct turnd_chan_in_value) == 56, "chan_in value layout");
_Static_assert(sizeof(struct turnd_chan_out_key) == 40, "chan_out key layout");
_Static_assert(sizeof(struct turnd_chan_out_value) == 64, "chan_out value layout");
_Static_assert(sizeof(struct turnd_alloc_stats) == 32, "stats layout");

// Bounded: a full map refuses the insert and that channel stays in user space. The loader
// may size them down (never up) from configuration.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct turnd_chan_in_key);
	__type(value, struct turnd_chan_in_value);
} turnd_chan_in SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, struct turnd_chan_out_key);
	__type(value, struct turnd_chan_out_value);
} turnd_chan_out SEC(".maps");

// Per CPU: the program adds without atomics; the worker sums the CPUs when the allocation
// ends and zeroes the slot when it hands it out again.
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, struct turnd_alloc_stats);
} turnd_alloc_stats SEC(".maps");

static __always_inline void count(__u32 which, __u64 bytes)
{
	struct turnd_count *c = bpf_map_lookup_elem(&turnd_counters, &which);

	// A per-CPU array's lookup only fails for an index out of range.
	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

static __always_inline int pass(__u32 which, __u64 bytes)
{
	count(which, bytes);
	return XDP_PASS;
}

// ChannelData (RFC 8656 §12.4): channel number 0x4000..0x4FFF, then a
// 16-bit length of the application data. Over UDP the datagram may carry
// the padding to a multiple of 4 or not (§12.5), so the UDP payload must
// lie in [4 + len, 4 + round_up_4(len)].
static __always_inline int channeldata_verdict(void *payload, void *data_end,
					       __u32 payload_len, int v6)
{
	__u8 *cd = payload;

	if ((void *)(cd + 4) > data_end)
		return pass(TURND_PASS_NOT_CHANNELDATA, payload_len);
	__u16 channel = ((__u16)cd[0] << 8) | cd[1];
	__u16 len = ((__u16)cd[2] << 8) | cd[3];

	if (channel < 0x4000 || channel > 0x4FFF)
		return pass(TURND_PASS_NOT_CHANNELDATA, payload_len);
	__u32 min = 4 + (__u32)len;
	__u32 max = 4 + (((__u32)len + 3) & ~3u);

	if (payload_len < min || payload_len > max)
		return pass(TURND_PASS_BAD_LENGTH, payload_len);
	return pass(v6 ? TURND_CHANNELDATA_V6 : TURND_CHANNELDATA_V4,
		    payload_len);
}

// frame_avail: the bytes the frame holds from the UDP header on.
static __always_inline int udp_verdict(struct udphdr *udp, void *data_end,
				       __u32 ip_payload_len, __u32 frame_avail,
				       int v6)
{
	if ((void *)(udp + 1) > data_end)
		return pass(TURND_PASS_NOT_UDP, 0);
	__u32 udp_len = bpf_ntohs(udp->len);

	// The UDP length must fit what the IP header says; anything else is
	// malformed and user space (or the kernel's stack) deals with it.
	if (udp_len < sizeof(*udp) || udp_len > ip_payload_len)
		return pass(TURND_PASS_NOT_UDP, 0);
	// ... and the frame must hold it: a truncated frame whose headers
	// claim more is malformed (the relaying step would send bytes that
	// never arrived). Compared as lengths, not as `udp + udp_len >
	// data_end`: variable packet-pointer arithmetic needs CAP_PERFMON.
	if (udp_len > frame_avail)
		return pass(TURND_PASS_NOT_UDP, 0);
	__u16 dport = bpf_ntohs(udp->dest);

	if (!bpf_map_lookup_elem(&turnd_ports, &dport))
		return pass(TURND_PASS_OTHER_PORT, udp_len - sizeof(*udp));
	return channeldata_verdict(udp + 1, data_end, udp_len - sizeof(*udp),
				   v6);
}

SEC("xdp")
int turnd_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	// Not `data_end - data`: subtracting packet pointers needs CAP_PERFMON,
	// and turnd must load this with CAP_BPF and CAP_NET_ADMIN only.
	__u32 frame_len = bpf_xdp_get_buff_len(ctx);

	count(TURND_SEEN, frame_len);
	if ((void *)(eth + 1) > data_end)
		return pass(TURND_PASS_NOT_IP, 0);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return pass(TURND_PASS_NOT_IP, 0);
		// No options (ihl 5), no fragments (MF clear, offset 0): the
		// relaying step rewrites fixed offsets and must see the whole
		// datagram.
		if (ip->version != 4 || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3FFF)) ||
		    ip->protocol != IPPROTO_UDP)
			return pass(TURND_PASS_NOT_UDP, 0);
		__u32 tot = bpf_ntohs(ip->tot_len);

		if (tot < sizeof(*ip))
			return pass(TURND_PASS_NOT_UDP, 0);
		// The header checks above make frame_len >= 34.
		return udp_verdict((void *)(ip + 1), data_end,
				   tot - sizeof(*ip),
				   frame_len - sizeof(*eth) - sizeof(*ip), 0);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return pass(TURND_PASS_NOT_IP, 0);
		// Extension headers (fragments included) go up.
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return pass(TURND_PASS_NOT_UDP, 0);
		// The header checks above make frame_len >= 54.
		return udp_verdict((void *)(ip6 + 1), data_end,
				   bpf_ntohs(ip6->payload_len),
				   frame_len - sizeof(*eth) - sizeof(*ip6), 1);
	}
	return pass(TURND_PASS_NOT_IP, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
