//! Kernel-backed test support shared by the fixture tests, the benchmark and (later) the
//! network-namespace scenarios: frames, expected outputs, and a configured balancer (`Lab`).

pub mod expect;
pub mod frames;
pub mod lab;
pub mod run;
