//! `tc_probe_encap` on TC egress of the balancer's interface: health-check probes marked by
//! the agent leave encapsulated to their backend (see lb-ebpf's `probe` module).
//!
//! Not pinned, unlike `xdp_lb`'s link: the program only acts on the probes of a running agent,
//! so it lives exactly as long as the agent does (an agent that stops leaves nothing on the
//! interface, a new one attaches its own before its first probe). It is attached before
//! `xdp_lb` and again whenever the interface comes back, so no probe ever leaves an interface
//! without it.

use super::{load::loader_program, Balancer};
use anyhow::{Context, Result};
use aya::programs::{
    tc::{self, TcAttachOptions},
    LinkOrder, SchedClassifier, TcAttachType,
};
use lb_common::ProbeStat;

/// The TC program's name in the balancer object.
pub const PROBE_PROGRAM: &str = "tc_probe_encap";

pub(super) fn load(ebpf: &mut aya::Ebpf) -> Result<()> {
    let prog = classifier(ebpf)?;
    prog.load()
        .with_context(|| format!("the verifier rejected {PROBE_PROGRAM}"))
}

fn classifier(ebpf: &mut aya::Ebpf) -> Result<&mut SchedClassifier> {
    loader_program(ebpf, PROBE_PROGRAM)?
        .try_into()
        .with_context(|| format!("{PROBE_PROGRAM} is not a TC program"))
}

impl Balancer {
    /// Attach `tc_probe_encap` to `iface`'s egress, replacing this agent's earlier attachment
    /// (to an interface that has since gone). TCX (Linux 6.6+), else a clsact filter.
    pub fn attach_probe(&mut self, iface: &str) -> Result<()> {
        let previous = self.probe_link.take();
        let prog = classifier(&mut self.ebpf)?;
        if let Some(link) = previous {
            // The old interface is gone with its attachment: nothing to undo if this fails.
            let _ = prog.detach(link);
        }
        let tcx = prog.attach_with_options(
            iface,
            TcAttachType::Egress,
            TcAttachOptions::TcxOrder(LinkOrder::default()),
        );
        let link = match tcx {
            Ok(link) => link,
            Err(tcx_error) => {
                // Older kernels: a classic filter under the clsact qdisc (there may be one).
                let _ = tc::qdisc_add_clsact(iface);
                prog.attach(iface, TcAttachType::Egress).with_context(|| {
                    format!(
                        "attaching {PROBE_PROGRAM} to {iface} egress (TCX failed too: \
                         {tcx_error}); health checks with via = \"tunnel\" need it"
                    )
                })?
            }
        };
        self.probe_link = Some(link);
        Ok(())
    }

    /// The loaded program (for BPF_PROG_TEST_RUN fixtures).
    pub fn probe_program(&mut self) -> Result<&mut SchedClassifier> {
        classifier(&mut self.ebpf)
    }

    /// `tc_probe_encap`'s counters summed over CPUs, in `ProbeStat` order.
    pub fn probe_stats(&self) -> Result<Vec<(ProbeStat, u64)>> {
        self.counters.probe_stats()
    }
}
