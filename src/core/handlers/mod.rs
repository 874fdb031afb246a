//! One file per TURN method, each an `impl Server` block holding that method's rules.

mod allocate;
mod alternate;
mod authenticate;
mod binding;
mod channel_bind;
mod connect;
mod connection_attempt;
mod connection_bind;
mod create_permission;
mod dispatch;
mod family;
mod peer_filter_changed;
mod refresh;
mod relay;
mod tcp_allocation;
