//! Host network facts over rtnetlink (no shelling out to `ip`): interfaces, their addresses and
//! XDP attachments, the default gateway's MAC, and sysctls.
//!
//! Everything here works in the network namespace of the calling thread: the netlink and UDP
//! sockets are opened by the task that asks, so a thread that entered a namespace with
//! `setns` (and runs its own current-thread runtime) sees that namespace's links, routes and
//! `/proc/sys/net`.
//!
//! By job: `netlink` (the connection and raw link/address queries), `link` (interface facts,
//! the driver, setting a link up), `route` (default routes), `gateway` (resolving the next
//! hop's MAC through the neighbour table), `sysctl`.

mod gateway;
mod link;
mod netlink;
mod route;
mod sysctl;
#[cfg(test)]
mod tests;

pub use gateway::{format_mac, gateway_mac};
pub use link::{
    driver, find_interface, hw_addr, interface, interfaces, link_facts, set_link_up, AttachedXdp,
    Interface, LinkFacts, XdpAttachMode,
};
pub use sysctl::read_sysctl;
