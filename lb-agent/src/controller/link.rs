//! The balancer's XDP attachment as its interface comes and goes (events from `linkwatch`).

use super::Controller;
use crate::{
    config,
    dataplane::{pinned, Attachment},
    linkwatch::LinkEvent,
    netinfo,
};
use anyhow::Result;
use std::time::{Duration, Instant};
use tracing::{error, info};

/// Least time between two attempts to attach to an interface that came back.
const ATTACH_RETRY: Duration = Duration::from_secs(2);

/// Whether the program runs on the interface, as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum XdpState {
    /// Not attached yet (the controller programs the maps first).
    Pending,
    Attached {
        how: Attachment,
        ifindex: u32,
    },
    /// Was attached; forwarding stopped for this reason.
    Detached(String),
}

impl std::fmt::Display for XdpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            XdpState::Pending => f.write_str("detached"),
            XdpState::Attached { how, .. } => write!(f, "{how}"),
            XdpState::Detached(reason) => write!(f, "detached: {reason}"),
        }
    }
}

impl Controller {
    /// Attach (or swap into the pinned link) once the maps are programmed.
    pub fn attach(&mut self, iface: &str, mode: config::XdpMode) -> Result<Attachment> {
        let how = self.dp.attach(iface, mode)?;
        let ifindex = pinned::ifindex(iface).unwrap_or(0);
        self.xdp = XdpState::Attached { how, ifindex };
        self.share_now();
        Ok(how)
    }

    /// The interface's index while the program is attached.
    pub fn attached_ifindex(&self) -> Option<u32> {
        match self.xdp {
            XdpState::Attached { ifindex, .. } => Some(ifindex),
            _ => None,
        }
    }

    /// The interface went away (its link is severed), came back (attach again), or has a new
    /// MAC (frames to it are ours from now on).
    pub fn on_link(&mut self, event: LinkEvent) -> Result<()> {
        let iface = self.config.agent.interface.clone();
        match event {
            LinkEvent::Gone { ifindex } => {
                if matches!(self.xdp, XdpState::Detached(_)) {
                    return Ok(());
                }
                error!(
                    %iface,
                    ifindex,
                    "interface gone: the balancer is detached and forwards nothing; it is \
                     attached again as soon as an interface named {iface} comes back"
                );
                self.xdp = XdpState::Detached("interface gone".to_string());
                self.share_now();
                Ok(())
            }
            LinkEvent::Present { ifindex } => {
                if self.attached_ifindex() == Some(ifindex) {
                    return Ok(());
                }
                self.reattach(&iface, ifindex)
            }
            LinkEvent::Address { mac } => self.set_local_mac(&iface, mac),
        }
    }

    /// From the tick: try again to attach to an interface that came back but refused the
    /// program at first.
    pub(super) fn retry_attach(&mut self) {
        let Some(at) = self.attach_retry else {
            return;
        };
        let iface = self.config.agent.interface.clone();
        if let Some(ifindex) = pinned::ifindex(&iface).filter(|_| Instant::now() >= at) {
            if let Err(e) = self.reattach(&iface, ifindex) {
                error!("{e:#}");
            }
        }
    }

    fn reattach(&mut self, iface: &str, ifindex: u32) -> Result<()> {
        let mode = self.config.agent.xdp_mode;
        // The new interface's MAC goes into CONFIG before the program sees its first frame.
        let mac = netinfo::hw_addr(iface).unwrap_or(self.local_mac);
        match self
            .set_local_mac(iface, mac)
            .and_then(|()| self.attach(iface, mode))
        {
            Ok(how) => {
                self.attach_retry = None;
                info!(%iface, ifindex, mode = %how, "interface back: balancer attached again");
                Ok(())
            }
            Err(e) => {
                // Tried again from the tick while the interface is there.
                self.attach_retry = Some(Instant::now() + ATTACH_RETRY);
                self.xdp = XdpState::Detached(format!("attaching again failed: {e:#}"));
                self.share_now();
                Err(e.context(format!("attaching to {iface} again after it came back")))
            }
        }
    }

    /// Frames are forwarded only when sent to the interface's MAC (or `accept_macs`): an
    /// interface created again under the same name, or given another address, would otherwise
    /// have its traffic passed to the host as not ours.
    fn set_local_mac(&mut self, iface: &str, mac: [u8; 6]) -> Result<()> {
        if mac == self.local_mac {
            return Ok(());
        }
        let before = std::mem::replace(&mut self.local_mac, mac);
        let agent = self.config.agent.clone();
        if let Err(e) = self.write_lb_config(&agent) {
            // CONFIG still holds the old MAC: so does the controller.
            self.local_mac = before;
            return Err(e.context("writing the interface's new MAC into CONFIG"));
        }
        info!(
            %iface,
            from = %netinfo::format_mac(&before),
            to = %netinfo::format_mac(&mac),
            "interface MAC changed: frames to the new MAC are forwarded"
        );
        Ok(())
    }
}
