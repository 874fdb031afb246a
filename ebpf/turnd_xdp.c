// SPDX-License-Identifier: Apache-2.0
//
// turnd's XDP program (docs/xdp.md). It relays established channels of UDP
// allocations in the kernel, both directions, and passes everything else up
// with XDP_PASS to the unchanged user-space path:
//
// - client -> peer: ChannelData (RFC 8656 section 12.4) to a listen port whose
//   (client, listen address, channel) has a live entry in turnd_chan_in loses
//   its 4-byte header (and any padding) and leaves from the relay address to
//   the peer;
// - peer -> client: a datagram to a relay address from a peer with a live
//   entry in turnd_chan_out gains a ChannelData header and leaves from the
//   listen address to the client.
//
// The entries come from turnd's core, which alone decides what may be
// relayed (src/core/fast_path.rs); this program never creates state. The
// egress interface and MAC addresses come from bpf_fib_lookup, and the packet
// goes out with XDP_TX (same interface) or bpf_redirect. Checksums are
// updated incrementally (RFC 1624); an IPv4 UDP checksum of 0 ("none") stays
// 0. Every packet is counted once per CPU under what happened to it.
//
// It must load with CAP_BPF and CAP_NET_ADMIN only: no packet-pointer
// subtraction and no variable offsets added to packet pointers (both need
// CAP_PERFMON); variable offsets go through bpf_xdp_load_bytes.
//
// Build: clang -target bpf -O2 -g -Wall -c ebpf/turnd_xdp.c -o turnd_xdp.o
// (build.rs with the `xdp` feature; ebpf/smoke.sh and ebpf/parse_test.sh).

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#ifndef AF_INET
#define AF_INET 2
#endif
#ifndef AF_INET6
#define AF_INET6 10
#endif

// What happened to each packet. The user-space side folds these per-CPU
// counters into metrics (src/metrics/xdp.rs); the numbers are part of the
// map's contract, so append, never renumber. Every packet is counted under
// TURND_SEEN and under exactly one outcome (a pass reason or a relay);
// TURND_CHANNELDATA_V4/V6 additionally count well-formed ChannelData to a
// listen port, whatever became of it.
enum turnd_counter {
	TURND_SEEN = 0,
	// Not IPv4/IPv6 over plain Ethernet (ARP, VLAN tags, ...).
	TURND_PASS_NOT_IP = 1,
	// IP but not a UDP datagram the program can handle: other protocols,
	// IPv4 options, fragments, IPv6 extension headers, bad UDP lengths.
	TURND_PASS_NOT_UDP = 2,
	// UDP, neither to a listen port nor matching a relay entry.
	TURND_PASS_OTHER_PORT = 3,
	// To a listen port but not ChannelData (STUN messages, Send
	// indications: user space handles them).
	TURND_PASS_NOT_CHANNELDATA = 4,
	// ChannelData whose length field disagrees with the UDP payload.
	TURND_PASS_BAD_LENGTH = 5,
	// Well-formed ChannelData to a listen port over IPv4 / IPv6.
	TURND_CHANNELDATA_V4 = 6,
	TURND_CHANNELDATA_V6 = 7,
	// Relayed in the kernel; bytes are application payload bytes.
	TURND_RELAYED_TO_PEER = 8,
	TURND_RELAYED_TO_CLIENT = 9,
	// ChannelData with no entry for its (client, listen address, channel):
	// not bound, bound on a capped allocation, or not installable.
	TURND_PASS_NO_ENTRY = 10,
	// An entry past its expiry (user space applies the RFC's verdict).
	TURND_PASS_EXPIRED = 11,
	// bpf_fib_lookup did not give a next hop: no route, a local
	// destination, no neighbour entry yet, forwarding off on the ingress
	// interface, or the datagram would exceed the egress MTU.
	TURND_PASS_FIB = 12,
	// An IPv6 UDP datagram with checksum 0 (the kernel drops it), or a
	// frame the program does not rewrite (cross-family entries).
	TURND_PASS_UNSUPPORTED = 13,
	// Relayed in the kernel from one allocation to another of this host
	// (client -> relay A -> relay B -> client B, both channels' entries):
	// one datagram that user space would count once in each direction.
	TURND_RELAYED_HAIRPIN = 14,
	TURND_COUNTER_MAX = 15,
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

// ---- Checksums (RFC 1071 sums, RFC 1624 incremental updates) -------------
//
// Sums are of 16-bit words as numbers (the network-order bytes read big
// endian), accumulated in 32 bits and folded at the end; subtracting a word
// adds its one's complement.

static __always_inline __u32 fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return s;
}

static __always_inline __u32 sub16(__u32 s, __u16 w)
{
	return s + (__u16)~w;
}

// The words of an address of `n` bytes (4 or 16), added or subtracted.
// Addresses sit at even offsets in headers and in the keys, so they are read
// as 16-bit words.
static __always_inline __u32 sum_addr(__u32 s, const __u8 *a, int n, int neg)
{
	const __u16 *w = (const __u16 *)a;

#pragma unroll
	for (int i = 0; i < 8; i++) {
		if (i < n / 2) {
			__u16 v = bpf_ntohs(w[i]);

			s = neg ? sub16(s, v) : s + v;
		}
	}
	return s;
}

// Recomputes an IPv4 header's checksum (no options reach this point).
static __always_inline void ipv4_checksum(struct iphdr *ip)
{
	__u16 *w = (__u16 *)ip;
	__u32 s = 0;

	ip->check = 0;
#pragma unroll
	for (int i = 0; i < 10; i++)
		s += bpf_ntohs(w[i]);
	ip->check = bpf_htons(~fold(s) & 0xffff);
}

// A UDP checksum from the old one and the sum of what changed; 0 stays 0
// (IPv4's "no checksum"), and a computed 0 is sent as 0xffff.
static __always_inline __be16 udp_checksum(__be16 old, __u32 delta)
{
	if (old == 0)
		return 0;
	__u32 s = ((__u16)~bpf_ntohs(old)) + delta;
	__u16 c = ~fold(s) & 0xffff;

	return bpf_htons(c ? c : 0xffff);
}

// ---- Forwarding ---------------------------------------------------------

// The next hop for `src` -> `dst` with an IP packet of `tot_len` bytes: 0 and
// `fib` filled in, or the lookup's nonzero verdict. An ingress-view lookup
// (flags 0): the kernel requires forwarding enabled on the ingress interface
// (net.ipv4.conf.IFACE.forwarding, net.ipv6.conf.IFACE.forwarding) in either
// view, and this one does not pin the egress to the ingress interface. Too
// large for the egress MTU is BPF_FIB_LKUP_RET_FRAG_NEEDED; a local
// destination (a peer on this host) is BPF_FIB_LKUP_RET_NOT_FWDED.
static __always_inline int next_hop(struct xdp_md *ctx,
				    struct bpf_fib_lookup *fib, int v6,
				    const __u8 *src, const __u8 *dst,
				    __be16 sport, __be16 dport, __u16 tot_len)
{
	__builtin_memset(fib, 0, sizeof(*fib));
	fib->family = v6 ? AF_INET6 : AF_INET;
	fib->l4_protocol = IPPROTO_UDP;
	fib->sport = sport;
	fib->dport = dport;
	fib->tot_len = tot_len;
	fib->ifindex = ctx->ingress_ifindex;
	if (v6) {
		__builtin_memcpy(fib->ipv6_src, src, 16);
		__builtin_memcpy(fib->ipv6_dst, dst, 16);
	} else {
		__builtin_memcpy(&fib->ipv4_src, src, 4);
		__builtin_memcpy(&fib->ipv4_dst, dst, 4);
	}
	return bpf_fib_lookup(ctx, fib, sizeof(*fib), 0);
}

// Sends the rewritten frame out of the FIB's interface.
static __always_inline int transmit(struct xdp_md *ctx,
				    struct bpf_fib_lookup *fib)
{
	if (fib->ifindex == ctx->ingress_ifindex)
		return XDP_TX;
	return bpf_redirect(fib->ifindex, 0);
}

static __always_inline void count_alloc(__u32 slot, int to_peer, __u64 bytes)
{
	struct turnd_alloc_stats *a = bpf_map_lookup_elem(&turnd_alloc_stats, &slot);

	if (!a)
		return;
	if (to_peer) {
		a->to_peer_packets += 1;
		a->to_peer_bytes += bytes;
	} else {
		a->to_client_packets += 1;
		a->to_client_bytes += bytes;
	}
}

// The headers a rewrite writes, built on the stack first: nothing in the
// packet changes until every check has passed.
struct headers {
	struct ethhdr eth;
	union {
		struct iphdr v4;
		struct ipv6hdr v6;
	} ip;
	struct udphdr udp;
};

// Writes `h` at the start of the (adjusted) frame; `cd` non-zero also
// writes a ChannelData header after the UDP header.
static __always_inline int write_headers(struct xdp_md *ctx,
					 const struct headers *h, int v6,
					 __u16 channel, __u16 len, int cd)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -1;
	*eth = h->eth;
	struct udphdr *udp;

	if (v6) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return -1;
		*ip6 = h->ip.v6;
		udp = (void *)(ip6 + 1);
	} else {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return -1;
		*ip = h->ip.v4;
		udp = (void *)(ip + 1);
	}
	if ((void *)(udp + 1) > data_end)
		return -1;
	*udp = h->udp;
	if (cd) {
		__u8 *c = (void *)(udp + 1);

		if ((void *)(c + 4) > data_end)
			return -1;
		c[0] = channel >> 8;
		c[1] = channel & 0xff;
		c[2] = len >> 8;
		c[3] = len & 0xff;
	}
	return 0;
}

// What the parser found, for the relaying steps.
struct frame {
	void *ip;       // struct iphdr or struct ipv6hdr
	struct udphdr *udp;
	__u32 frame_len;
	__u32 l3_len;   // IP header length: 20 or 40
	__u32 udp_len;  // from the UDP header, checked against IP and frame
};

static __always_inline const __u8 *src_of(const struct frame *f, int v6)
{
	return v6 ? (const __u8 *)&((struct ipv6hdr *)f->ip)->saddr
		     : (const __u8 *)&((struct iphdr *)f->ip)->saddr;
}

static __always_inline const __u8 *dst_of(const struct frame *f, int v6)
{
	return v6 ? (const __u8 *)&((struct ipv6hdr *)f->ip)->daddr
		     : (const __u8 *)&((struct iphdr *)f->ip)->daddr;
}

// An address into a map key's 16 bytes (IPv4 in the first four).
static __always_inline void copy_addr(__u8 *to, const __u8 *from, int v6)
{
	if (v6)
		__builtin_memcpy(to, from, 16);
	else
		__builtin_memcpy(to, from, 4);
}

// The new IP header: from `src` to `dst`, carrying `udp_len` bytes of UDP,
// with what the relay's own socket would send (TTL/hop limit 64, TOS and
// flow label 0, DF as the allocation asked).
static __always_inline void build_ip(struct headers *h, const struct frame *f,
				     int v6, const __u8 *src, const __u8 *dst,
				     __u16 udp_len, int df)
{
	if (v6) {
		struct ipv6hdr *ip6 = &h->ip.v6;

		*ip6 = *(struct ipv6hdr *)f->ip;
		ip6->priority = 0;
		ip6->flow_lbl[0] = 0;
		ip6->flow_lbl[1] = 0;
		ip6->flow_lbl[2] = 0;
		ip6->payload_len = bpf_htons(udp_len);
		ip6->hop_limit = 64;
		__builtin_memcpy(&ip6->saddr, src, 16);
		__builtin_memcpy(&ip6->daddr, dst, 16);
	} else {
		struct iphdr *ip = &h->ip.v4;

		*ip = *(struct iphdr *)f->ip;
		ip->tos = 0;
		ip->tot_len = bpf_htons(sizeof(*ip) + udp_len);
		ip->frag_off = df ? bpf_htons(0x4000) : 0;
		ip->ttl = 64;
		__builtin_memcpy(&ip->saddr, src, 4);
		__builtin_memcpy(&ip->daddr, dst, 4);
		ipv4_checksum(ip);
	}
}

// The checksum delta of replacing the pseudo-header and UDP header fields:
// old addresses, ports and length out, new ones in (the length counts twice:
// pseudo-header and header). The protocol word does not change.
static __always_inline __u32 header_delta(__u32 s, const struct frame *f,
					  int v6, const __u8 *src, const __u8 *dst,
					  __be16 sport, __be16 dport,
					  __u16 udp_len)
{
	int n = v6 ? 16 : 4;

	s = sum_addr(s, src_of(f, v6), n, 1);
	s = sum_addr(s, dst_of(f, v6), n, 1);
	s = sub16(s, bpf_ntohs(f->udp->source));
	s = sub16(s, bpf_ntohs(f->udp->dest));
	s = sub16(s, f->udp_len);
	s = sub16(s, f->udp_len);
	s = sum_addr(s, src, n, 0);
	s = sum_addr(s, dst, n, 0);
	s += bpf_ntohs(sport);
	s += bpf_ntohs(dport);
	s += udp_len;
	s += udp_len;
	return s;
}

// ---- Client -> peer -----------------------------------------------------

// What to_peer returns when the peer is an address of this host: the caller
// tries the hairpin (below); nothing has been counted or changed yet.
#define TO_LOCAL_PEER (-1)

// Takes the ChannelData padding (`pad` bytes after `len` bytes of data) out
// of the checksum sum `s`. Non-zero if the bytes could not be read.
static __always_inline int pad_delta(struct xdp_md *ctx, const struct frame *f,
				     __u16 len, __u32 pad, __u32 *s)
{
	if (!pad)
		return 0;
	__u8 b[3] = {};
	// Offset of the padding in the frame; `len` odd puts its first byte at
	// an odd offset within the UDP datagram.
	__u32 off = sizeof(struct ethhdr) + f->l3_len + sizeof(struct udphdr) +
		    4 + len;

	if (pad == 1) {
		if (bpf_xdp_load_bytes(ctx, off, b, 1))
			return -1;
	} else if (pad == 2) {
		if (bpf_xdp_load_bytes(ctx, off, b, 2))
			return -1;
	} else {
		if (bpf_xdp_load_bytes(ctx, off, b, 3))
			return -1;
	}
	// Byte i sits at UDP offset 12 + len + i: the high half of a word at an
	// even offset, the low half at an odd one.
	*s = sub16(*s, (len & 1) ? b[0] : (__u16)b[0] << 8);
	if (pad > 1)
		*s = sub16(*s, (len & 1) ? (__u16)b[1] << 8 : b[1]);
	if (pad > 2)
		*s = sub16(*s, (len & 1) ? b[2] : (__u16)b[2] << 8);
	return 0;
}

// ChannelData `channel` with `len` bytes of data (and the UDP payload's
// remaining `pad` bytes of padding) from the client: relay it to the peer,
// or pass it up.
static __always_inline int to_peer(struct xdp_md *ctx, const struct frame *f,
				   __u16 channel, __u16 len, __u32 pad,
				   const int v6)
{
	struct turnd_chan_in_key key;

	__builtin_memset(&key, 0, sizeof(key));
	copy_addr(key.client_ip, src_of(f, v6), v6);
	copy_addr(key.listen_ip, dst_of(f, v6), v6);
	key.client_port = f->udp->source;
	key.listen_port = f->udp->dest;
	key.channel = channel;
	key.family = v6 ? 6 : 4;
	struct turnd_chan_in_value *v = bpf_map_lookup_elem(&turnd_chan_in, &key);

	if (!v)
		return pass(TURND_PASS_NO_ENTRY, len);
	if (bpf_ktime_get_ns() >= v->expires_ns)
		return pass(TURND_PASS_EXPIRED, len);
	if (v->family != key.family)
		return pass(TURND_PASS_UNSUPPORTED, len);
	// IPv6 requires a checksum; one of 0 is the kernel's to drop.
	if (v6 && f->udp->check == 0)
		return pass(TURND_PASS_UNSUPPORTED, len);
	// Copied: the entry may be replaced while this runs.
	__u8 relay[16], peer[16];
	__be16 relay_port = v->relay_port, peer_port = v->peer_port;
	__u32 slot = v->stats_slot;
	int df = v->dont_fragment;

	__builtin_memcpy(relay, v->relay_ip, 16);
	__builtin_memcpy(peer, v->peer_ip, 16);
	__u16 udp_len = sizeof(struct udphdr) + len;
	struct bpf_fib_lookup fib;

	int rc = next_hop(ctx, &fib, v6, relay, peer, relay_port, peer_port,
			  f->l3_len + udp_len);

	// A peer on this host: perhaps another allocation's relayed address
	// (both clients relayed by this server), which hairpin() tries.
	if (rc == BPF_FIB_LKUP_RET_NOT_FWDED)
		return TO_LOCAL_PEER;
	if (rc)
		return pass(TURND_PASS_FIB, len);

	// Padding bytes leave the checksum: each at its offset's parity.
	__u32 s = header_delta(0, f, v6, relay, peer, relay_port, peer_port,
			       udp_len);
	s = sub16(s, channel);
	s = sub16(s, len);
	if (pad_delta(ctx, f, len, pad, &s))
		return pass(TURND_PASS_BAD_LENGTH, len);
	struct headers h;

	__builtin_memcpy(h.eth.h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(h.eth.h_source, fib.smac, ETH_ALEN);
	h.eth.h_proto = v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	build_ip(&h, f, v6, relay, peer, udp_len, df);
	h.udp.source = relay_port;
	h.udp.dest = peer_port;
	h.udp.len = bpf_htons(udp_len);
	h.udp.check = udp_checksum(f->udp->check, s);

	// From here on the packet changes: failures can only abort.
	__u32 keep = sizeof(struct ethhdr) + f->l3_len + sizeof(struct udphdr) +
		     4 + len;

	if (f->frame_len > keep &&
	    bpf_xdp_adjust_tail(ctx, -(int)(f->frame_len - keep)))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, 4))
		return XDP_ABORTED;
	if (write_headers(ctx, &h, v6, 0, 0, 0))
		return XDP_ABORTED;
	count(TURND_RELAYED_TO_PEER, len);
	count_alloc(slot, 1, len);
	return transmit(ctx, &fib);
}

// ---- Peer -> client -----------------------------------------------------

// A UDP datagram not to a listen port: if it comes from a peer with an entry
// for the relay address it is sent to, frame it as ChannelData and send it to
// the client; otherwise pass it up.
static __always_inline int to_client(struct xdp_md *ctx,
				     const struct frame *f, const int v6)
{
	struct turnd_chan_out_key key;
	__u16 len = f->udp_len - sizeof(struct udphdr);

	__builtin_memset(&key, 0, sizeof(key));
	copy_addr(key.relay_ip, dst_of(f, v6), v6);
	copy_addr(key.peer_ip, src_of(f, v6), v6);
	key.relay_port = f->udp->dest;
	key.peer_port = f->udp->source;
	key.family = v6 ? 6 : 4;
	struct turnd_chan_out_value *v = bpf_map_lookup_elem(&turnd_chan_out, &key);

	if (!v)
		return pass(TURND_PASS_OTHER_PORT, len);
	if (bpf_ktime_get_ns() >= v->expires_ns)
		return pass(TURND_PASS_EXPIRED, len);
	if (v->family != key.family)
		return pass(TURND_PASS_UNSUPPORTED, len);
	if (v6 && f->udp->check == 0)
		return pass(TURND_PASS_UNSUPPORTED, len);
	// The ChannelData length field is 16 bits; so is the UDP length, which
	// must still hold the 4 more bytes.
	if (f->udp_len > 0xffff - 4)
		return pass(TURND_PASS_UNSUPPORTED, len);
	__u8 listen[16], client[16];
	__be16 listen_port = v->listen_port, client_port = v->client_port;
	__u16 channel = v->channel;
	__u32 slot = v->stats_slot;

	__builtin_memcpy(listen, v->listen_ip, 16);
	__builtin_memcpy(client, v->client_ip, 16);
	__u16 udp_len = f->udp_len + 4;
	struct bpf_fib_lookup fib;

	if (next_hop(ctx, &fib, v6, listen, client, listen_port,
		     client_port, f->l3_len + udp_len))
		return pass(TURND_PASS_FIB, len);

	// The ChannelData header comes in at an even offset; the data moves by
	// 4 bytes, so its words do not change.
	__u32 s = header_delta(0, f, v6, listen, client, listen_port, client_port,
			       udp_len);
	s += channel;
	s += len;
	struct headers h;

	__builtin_memcpy(h.eth.h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(h.eth.h_source, fib.smac, ETH_ALEN);
	h.eth.h_proto = v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	// The listen socket sends without DF unless the path says otherwise;
	// the client side never asked for it.
	build_ip(&h, f, v6, listen, client, udp_len, 0);
	h.udp.source = listen_port;
	h.udp.dest = client_port;
	h.udp.len = bpf_htons(udp_len);
	h.udp.check = udp_checksum(f->udp->check, s);

	__u32 keep = sizeof(struct ethhdr) + f->l3_len + f->udp_len;

	if (f->frame_len > keep &&
	    bpf_xdp_adjust_tail(ctx, -(int)(f->frame_len - keep)))
		return XDP_ABORTED;
	if (bpf_xdp_adjust_head(ctx, -4))
		return XDP_ABORTED;
	if (write_headers(ctx, &h, v6, channel, len, 1))
		return XDP_ABORTED;
	count(TURND_RELAYED_TO_CLIENT, len);
	count_alloc(slot, 0, len);
	return transmit(ctx, &fib);
}

// ---- Hairpin: one allocation to another of this host -------------------

// ChannelData from client A whose channel's peer is client B's relayed
// address on this host, where B has a channel back to A's relayed address:
// what user space would do in two steps (relay A sends to relay B, which
// frames it for B) done in one. The frame keeps its size: the ChannelData
// header is rewritten for B's channel, the headers go from B's listen address
// to B. Both entries must be live; anything else goes up as before.
static __always_inline int hairpin(struct xdp_md *ctx, const struct frame *in,
				   __u16 channel, __u16 len, __u32 pad,
				   const int v6)
{
	// The caller's packet pointers do not survive the call to to_peer (the
	// verifier forgets them after any call that may move packet data): the
	// headers are found again, at the offsets the parser checked.
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct frame g = *in;
	const struct frame *f = &g;

	if (v6) {
		struct ipv6hdr *ip6 = data + sizeof(struct ethhdr);

		g.ip = ip6;
		g.udp = (void *)(ip6 + 1);
	} else {
		struct iphdr *ip = data + sizeof(struct ethhdr);

		g.ip = ip;
		g.udp = (void *)(ip + 1);
	}
	if ((void *)(g.udp + 1) > data_end)
		return pass(TURND_PASS_NOT_UDP, len);
	struct turnd_chan_in_key key;

	__builtin_memset(&key, 0, sizeof(key));
	copy_addr(key.client_ip, src_of(f, v6), v6);
	copy_addr(key.listen_ip, dst_of(f, v6), v6);
	key.client_port = f->udp->source;
	key.listen_port = f->udp->dest;
	key.channel = channel;
	key.family = v6 ? 6 : 4;
	struct turnd_chan_in_value *a = bpf_map_lookup_elem(&turnd_chan_in, &key);

	if (!a)
		return pass(TURND_PASS_NO_ENTRY, len);
	__u64 now = bpf_ktime_get_ns();

	if (now >= a->expires_ns)
		return pass(TURND_PASS_EXPIRED, len);
	struct turnd_chan_out_key back;

	__builtin_memset(&back, 0, sizeof(back));
	__builtin_memcpy(back.relay_ip, a->peer_ip, 16);
	__builtin_memcpy(back.peer_ip, a->relay_ip, 16);
	back.relay_port = a->peer_port;
	back.peer_port = a->relay_port;
	back.family = key.family;
	__u32 slot_a = a->stats_slot;
	struct turnd_chan_out_value *b = bpf_map_lookup_elem(&turnd_chan_out, &back);

	// A local peer that is not a relayed address with a channel back (a
	// Send-indication peer, or one on another allocation's permission only):
	// user space, as for any local destination.
	if (!b)
		return pass(TURND_PASS_FIB, len);
	if (now >= b->expires_ns)
		return pass(TURND_PASS_EXPIRED, len);
	if (b->family != key.family)
		return pass(TURND_PASS_UNSUPPORTED, len);
	__u8 listen[16], client[16];
	__be16 listen_port = b->listen_port, client_port = b->client_port;
	__u16 channel_b = b->channel;
	__u32 slot_b = b->stats_slot;

	__builtin_memcpy(listen, b->listen_ip, 16);
	__builtin_memcpy(client, b->client_ip, 16);
	__u16 udp_len = sizeof(struct udphdr) + 4 + len;
	struct bpf_fib_lookup fib;

	if (next_hop(ctx, &fib, v6, listen, client, listen_port, client_port,
		     f->l3_len + udp_len))
		return pass(TURND_PASS_FIB, len);
	// The data stays where it is; the length word does not change.
	__u32 s = header_delta(0, f, v6, listen, client, listen_port,
			       client_port, udp_len);
	s = sub16(s, channel);
	s += channel_b;
	if (pad_delta(ctx, f, len, pad, &s))
		return pass(TURND_PASS_BAD_LENGTH, len);
	struct headers h;

	__builtin_memcpy(h.eth.h_dest, fib.dmac, ETH_ALEN);
	__builtin_memcpy(h.eth.h_source, fib.smac, ETH_ALEN);
	h.eth.h_proto = v6 ? bpf_htons(ETH_P_IPV6) : bpf_htons(ETH_P_IP);
	build_ip(&h, f, v6, listen, client, udp_len, 0);
	h.udp.source = listen_port;
	h.udp.dest = client_port;
	h.udp.len = bpf_htons(udp_len);
	h.udp.check = udp_checksum(f->udp->check, s);

	__u32 keep = sizeof(struct ethhdr) + f->l3_len + udp_len;

	if (f->frame_len > keep &&
	    bpf_xdp_adjust_tail(ctx, -(int)(f->frame_len - keep)))
		return XDP_ABORTED;
	if (write_headers(ctx, &h, v6, channel_b, len, 1))
		return XDP_ABORTED;
	count(TURND_RELAYED_HAIRPIN, len);
	count_alloc(slot_a, 1, len);
	count_alloc(slot_b, 0, len);
	return transmit(ctx, &fib);
}

static __noinline int hairpin4(struct xdp_md *ctx, const struct frame *f,
			       __u16 channel, __u16 len, __u32 pad)
{
	return hairpin(ctx, f, channel, len, pad, 0);
}

static __noinline int hairpin6(struct xdp_md *ctx, const struct frame *f,
			       __u16 channel, __u16 len, __u32 pad)
{
	return hairpin(ctx, f, channel, len, pad, 1);
}

// One function per direction and family, not inlined: each gets its own
// stack frame (the verifier's 512 bytes are per call chain, and the four
// would not fit side by side), and the family is a constant in each, so the
// verifier sees only that family's header offsets.
static __noinline int to_peer4(struct xdp_md *ctx, const struct frame *f,
			       __u16 channel, __u16 len, __u32 pad)
{
	return to_peer(ctx, f, channel, len, pad, 0);
}

static __noinline int to_peer6(struct xdp_md *ctx, const struct frame *f,
			       __u16 channel, __u16 len, __u32 pad)
{
	return to_peer(ctx, f, channel, len, pad, 1);
}

static __noinline int to_client4(struct xdp_md *ctx, const struct frame *f)
{
	return to_client(ctx, f, 0);
}

static __noinline int to_client6(struct xdp_md *ctx, const struct frame *f)
{
	return to_client(ctx, f, 1);
}

// ---- Parsing ------------------------------------------------------------

// ChannelData (RFC 8656 section 12.4): channel number 0x4000..0x4FFF, then a
// 16-bit length of the application data. Over UDP the datagram may carry the
// padding to a multiple of 4 or not (section 12.5), so the UDP payload must
// lie in [4 + len, 4 + round_up_4(len)].
static __always_inline int channeldata(struct xdp_md *ctx, const struct frame *f,
				       void *data_end, const int v6)
{
	__u8 *cd = (void *)(f->udp + 1);
	__u32 payload_len = f->udp_len - sizeof(struct udphdr);

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
	__u32 pad = payload_len - min;
	int r;

	if (v6) {
		count(TURND_CHANNELDATA_V6, len);
		r = to_peer6(ctx, f, channel, len, pad);
		return r == TO_LOCAL_PEER ? hairpin6(ctx, f, channel, len, pad) : r;
	}
	count(TURND_CHANNELDATA_V4, len);
	r = to_peer4(ctx, f, channel, len, pad);
	return r == TO_LOCAL_PEER ? hairpin4(ctx, f, channel, len, pad) : r;
}

// The UDP part: `f` has the IP header; checks the UDP header against the IP
// payload length and the frame, then hands over to the two directions.
static __always_inline int udp(struct xdp_md *ctx, struct frame *f,
			       void *data_end, __u32 ip_payload_len,
			       const int v6)
{
	struct udphdr *udp = f->udp;

	if ((void *)(udp + 1) > data_end)
		return pass(TURND_PASS_NOT_UDP, 0);
	__u32 udp_len = bpf_ntohs(udp->len);

	// The UDP length must fit what the IP header says; anything else is
	// malformed and user space (or the kernel's stack) deals with it.
	if (udp_len < sizeof(*udp) || udp_len > ip_payload_len)
		return pass(TURND_PASS_NOT_UDP, 0);
	// ... and the frame must hold it: a truncated frame whose headers
	// claim more is malformed (relaying it would send bytes that never
	// arrived). Compared as lengths, not as `udp + udp_len > data_end`:
	// variable packet-pointer arithmetic needs CAP_PERFMON.
	if (udp_len > f->frame_len - sizeof(struct ethhdr) - f->l3_len)
		return pass(TURND_PASS_NOT_UDP, 0);
	f->udp_len = udp_len;
	__u16 dport = bpf_ntohs(udp->dest);

	if (bpf_map_lookup_elem(&turnd_ports, &dport))
		return channeldata(ctx, f, data_end, v6);
	return v6 ? to_client6(ctx, f) : to_client4(ctx, f);
}

SEC("xdp")
int turnd_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct frame f = {};

	// Not `data_end - data`: subtracting packet pointers needs CAP_PERFMON,
	// and turnd must load this with CAP_BPF and CAP_NET_ADMIN only.
	f.frame_len = bpf_xdp_get_buff_len(ctx);

	count(TURND_SEEN, f.frame_len);
	if ((void *)(eth + 1) > data_end)
		return pass(TURND_PASS_NOT_IP, 0);

	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return pass(TURND_PASS_NOT_IP, 0);
		// No options (ihl 5), no fragments (MF clear, offset 0): the
		// rewrite uses fixed offsets and must see the whole datagram.
		if (ip->version != 4 || ip->ihl != 5 ||
		    (ip->frag_off & bpf_htons(0x3FFF)) ||
		    ip->protocol != IPPROTO_UDP)
			return pass(TURND_PASS_NOT_UDP, 0);
		__u32 tot = bpf_ntohs(ip->tot_len);

		if (tot < sizeof(*ip) || tot > f.frame_len - sizeof(*eth))
			return pass(TURND_PASS_NOT_UDP, 0);
		f.ip = ip;
		f.udp = (void *)(ip + 1);
		f.l3_len = sizeof(*ip);
		return udp(ctx, &f, data_end, tot - sizeof(*ip), 0);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return pass(TURND_PASS_NOT_IP, 0);
		// Extension headers (fragments included) go up.
		if (ip6->version != 6 || ip6->nexthdr != IPPROTO_UDP)
			return pass(TURND_PASS_NOT_UDP, 0);
		f.ip = ip6;
		f.udp = (void *)(ip6 + 1);
		f.l3_len = sizeof(*ip6);
		return udp(ctx, &f, data_end, bpf_ntohs(ip6->payload_len), 1);
	}
	return pass(TURND_PASS_NOT_IP, 0);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
