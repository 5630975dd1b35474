//! lb-agent: loads the XDP balancer, programs its maps from the configuration, health-checks
//! backends and fails them over. `dataplane` is the only module that touches BPF maps.

pub mod admin;
pub mod bgp;
pub mod bpffs;
pub mod cli;
pub mod config;
pub mod controller;
pub mod daemon;
pub mod dataplane;
pub mod docgen;
pub mod doctor;
pub mod gateway;
pub mod hashkey;
pub mod health;
pub mod limits;
pub mod linkwatch;
pub mod maglev;
pub mod netinfo;
pub mod notify;
pub mod pinlock;
pub mod secrets;
#[cfg(test)]
mod testpki;
pub mod top;
pub mod trace;
