//! Kernel-backed test support shared by the fixture tests, the benchmark, the end-to-end
//! scenarios and the demo: frames, expected outputs, a configured balancer (`Lab`), and the
//! network-namespace harness (`topo`, `netns`, `servers`, `client`, `agentproc`, `scenario`),
//! and what the end-to-end benchmarks measure with (`wrk`, `haproxy`, `cpu`, `progstats`).

pub mod agentproc;
pub mod client;
pub mod cpu;
pub mod expect;
pub mod frames;
pub mod haproxy;
pub mod inject;
pub mod lab;
pub mod netns;
pub mod progstats;
pub mod run;
pub mod scenario;
pub mod servers;
pub mod topo;
pub mod wrk;
