//! lb-agent: loads the XDP balancer, programs its maps from the configuration, health-checks
//! backends and fails them over. `dataplane` is the only module that touches BPF maps.

pub mod dataplane;
pub mod maglev;
