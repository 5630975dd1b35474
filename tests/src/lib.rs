//! Kernel-backed test support shared by the fixture tests, the benchmark, the end-to-end
//! scenarios and the demo: frames, expected outputs, a configured balancer (`Lab`), and the
//! network-namespace harness (`topo`, `netns`, `servers`, `client`, `agentproc`, `scenario`,
//! `fleet`, `pair`), and benchmark support (`benchkit`, `flood`, `wrk`, `haproxy`, `cpu`,
//! `progstats`).

pub mod agentproc;
pub mod benchkit;
pub mod client;
pub mod cpu;
pub mod expect;
pub mod fleet;
pub mod flood;
pub mod frames;
pub mod haproxy;
pub mod inject;
pub mod lab;
pub mod netns;
pub mod pair;
pub mod pins;
pub mod progstats;
pub mod relink;
pub mod run;
pub mod scenario;
pub mod servers;
pub mod topo;
pub mod wrk;
