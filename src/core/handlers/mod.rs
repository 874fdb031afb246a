//! One file per TURN method, each an `impl Server` block holding that method's rules.

mod allocate;
mod authenticate;
mod binding;
mod channel_bind;
mod connection_attempt;
mod connect;
mod connection_bind;
mod create_permission;
mod refresh;
mod tcp_allocation;
mod relay;
