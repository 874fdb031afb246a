//! turnd: a STUN/TURN relay server.
//!
//! The crate is split the way quinn and str0m are split:
//! - [`stun`]: a zero-copy STUN/ChannelData codec. Parses by borrowing the datagram and builds
//!   into a caller's buffer, so neither direction allocates.
//! - [`core`]: the sans-IO TURN server. It owns no sockets, spawns no tasks and never reads the
//!   clock; time comes in as an argument and work goes out as returned values.
//! - [`client`]: a sans-IO TURN client on the same codec, used by `turnd probe`, `turnd-bench`
//!   and the core tests.
//! - [`config`]: the one TOML file, its flags and `TURND_*` environment variables.
//! - [`shell`]: the thin I/O driver: one worker thread per core, each a poll loop that owns
//!   its `SO_REUSEPORT` listeners, relay sockets, connections and core instance.
//! - [`metrics`]: per-worker counters summed at scrape time, and the admin HTTP listener
//!   (`/metrics`, `/healthz`, `/readyz`).
//! - [`credentials`] and [`healthcheck`]: the `turnd credentials` and `turnd healthcheck`
//!   subcommands.
//! - [`heap`]: the counting global allocator behind the `turnd_heap_bytes` gauge.
//! - [`probe`]: `turnd probe`, a TURN client that diagnoses connectivity from the client's side.
//! - [`summary`]: the start-up summary: what listens where, what clients are told, and
//!   each warning with its fix.

pub mod client;
pub mod config;
pub mod core;
pub mod credentials;
pub mod healthcheck;
pub mod heap;
pub mod metrics;
pub mod probe;
pub mod shell;
pub mod store;
pub mod stun;
pub mod summary;
