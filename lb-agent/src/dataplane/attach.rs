//! Attaching programs through XDP links, pinning those links so forwarding outlives the agent,
//! and removing what the balancer pinned.

use super::maps;
use anyhow::{Context, Result};
use aya::programs::Xdp;
use std::path::{Path, PathBuf};

/// The pinned XDP link inside the pin directory is named after its interface, so a restart on
/// another interface attaches afresh instead of adopting a link that serves the old one.
const LINK_PIN_PREFIX: &str = "xdp_link_";

pub fn link_pin(dir: &Path, iface: &str) -> PathBuf {
    dir.join(format!("{LINK_PIN_PREFIX}{iface}"))
}

/// How the program ended up attached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attachment {
    Native,
    Skb,
    /// A pinned link from an earlier agent now runs this program (mode unchanged).
    Adopted,
}

impl std::fmt::Display for Attachment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attachment::Native => "native",
            Attachment::Skb => "skb",
            Attachment::Adopted => "adopted",
        })
    }
}

/// Attach `prog` to `iface`, adopting the link pinned at `link_pin` when there is one.
pub(super) fn attach_xdp(
    prog: &mut Xdp,
    iface: &str,
    mode: crate::config::XdpMode,
    link_pin: Option<&Path>,
) -> Result<Attachment> {
    use crate::config::XdpMode as Mode;
    use aya::programs::{links::FdLink, links::PinnedLink, xdp::XdpLink, XdpMode as Flags};
    if let Some(pin) = link_pin.filter(|p| p.exists()) {
        let pinned = PinnedLink::from_pin(pin)
            .with_context(|| format!("opening the pinned link {}", pin.display()))?;
        let link = XdpLink::try_from(FdLink::from(pinned))
            .context("the pinned link is not an XDP link")?;
        prog.attach_to_link(link)
            .context("swapping the new program into the pinned link")?;
        return Ok(Attachment::Adopted);
    }
    let (id, how) = match mode {
        Mode::Native => (prog.attach(iface, Flags::Driver), Attachment::Native),
        Mode::Skb => (prog.attach(iface, Flags::Skb), Attachment::Skb),
        Mode::Auto => match prog.attach(iface, Flags::Driver) {
            Ok(id) => (Ok(id), Attachment::Native),
            Err(native) => {
                tracing::warn!(
                    %iface,
                    error = %native,
                    "native XDP failed, falling back to skb (generic) mode: much slower; \
                     check the driver's XDP support with `lb-agent doctor`"
                );
                (prog.attach(iface, Flags::Skb), Attachment::Skb)
            }
        },
    };
    let id = id.with_context(|| format!("attaching to {iface} ({how} mode)"))?;
    if let Some(pin) = link_pin {
        let link = prog.take_link(id).context("taking the XDP link")?;
        let fd_link = FdLink::try_from(link)
            .context("the kernel gave no bpf_link for XDP (kernel too old to pin it)")?;
        if let Some(dir) = pin.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fd_link
            .pin(pin)
            .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
    }
    Ok(how)
}

/// Detach the program behind the link pinned at `pin` by removing the pin (the last reference).
pub fn detach_pinned(pin: &Path) -> Result<()> {
    use aya::programs::links::PinnedLink;
    let pinned = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening the pinned link {}", pin.display()))?;
    drop(pinned.unpin().context("unpinning the XDP link")?);
    Ok(())
}

/// Balancer links pinned in `dir`, whatever their interface.
pub(super) fn pinned_links(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    Ok(entries
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(LINK_PIN_PREFIX))
        .map(|e| e.path())
        .collect())
}

/// Remove the pinned links (detaching the program) and the pinned maps.
pub fn unpin_all(pin_dir: &Path) -> Result<()> {
    for link in pinned_links(pin_dir)? {
        detach_pinned(&link)?;
    }
    for map in maps::pinned() {
        let path = pin_dir.join(map.name);
        if path.exists() {
            std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}
