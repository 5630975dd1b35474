//! Attaching programs through XDP links, pinning those links so forwarding outlives the agent,
//! and removing what the balancer pinned.

use super::{maps, pinned};
use anyhow::{bail, Context, Result};
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

/// Attach `prog` to `iface`, adopting the link pinned at `link_pin` when there is one. A pinned
/// link whose interface is gone (severed) is replaced; one that serves another interface is
/// refused.
pub(super) fn attach_xdp(
    prog: &mut Xdp,
    iface: &str,
    mode: crate::config::XdpMode,
    link_pin: Option<&Path>,
) -> Result<Attachment> {
    use aya::programs::links::FdLink;
    if let Some(pin) = link_pin.filter(|p| p.exists()) {
        if let Some(how) = adopt(prog, iface, pin)? {
            return Ok(how);
        }
    }
    let how = attach_fresh(prog, iface, mode)?;
    if let Some(pin) = link_pin {
        let link = prog.take_link(how.1).context("taking the XDP link")?;
        let fd_link = FdLink::try_from(link)
            .context("the kernel gave no bpf_link for XDP (kernel too old to pin it)")?;
        if let Some(dir) = pin.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        fd_link
            .pin(pin)
            .with_context(|| format!("pinning the XDP link at {}", pin.display()))?;
    }
    Ok(how.0)
}

/// Swap `prog` into the link pinned at `pin`. None: the link was severed (its interface went
/// away) and has been removed, so the caller attaches afresh.
fn adopt(prog: &mut Xdp, iface: &str, pin: &Path) -> Result<Option<Attachment>> {
    use aya::programs::{links::FdLink, links::PinnedLink, xdp::XdpLink};
    let state = pinned::link_state(pin)?;
    if state.severed() {
        replace_severed(pin, iface)?;
        return Ok(None);
    }
    let here = pinned::ifindex(iface)
        .with_context(|| format!("no interface {iface} in this network namespace to attach to"))?;
    if state.ifindex != here {
        bail!(
            "the XDP link pinned at {} serves interface index {}, but {iface} is index {here} \
             here (renamed, or another namespace's): nothing was changed. Remove that pin (it \
             detaches what runs there) or use another pin directory.",
            pin.display(),
            state.ifindex
        );
    }
    let pinned = PinnedLink::from_pin(pin)
        .with_context(|| format!("opening the pinned link {}", pin.display()))?;
    let link =
        XdpLink::try_from(FdLink::from(pinned)).context("the pinned link is not an XDP link")?;
    match prog.attach_to_link(link) {
        Ok(_) => Ok(Some(Attachment::Adopted)),
        // Severed between the look and the swap.
        Err(e) if errno(&e) == Some(libc::ENOLINK) => {
            replace_severed(pin, iface)?;
            Ok(None)
        }
        Err(e) => Err(e).context("swapping the new program into the pinned link"),
    }
}

fn errno(e: &aya::programs::ProgramError) -> Option<i32> {
    match e {
        aya::programs::ProgramError::SyscallError(s) => s.io_error.raw_os_error(),
        _ => None,
    }
}

/// A severed link forwards nothing and can never be updated (ENOLINK): unpin it so the program
/// is attached afresh.
fn replace_severed(pin: &Path, iface: &str) -> Result<()> {
    std::fs::remove_file(pin)
        .with_context(|| format!("removing the severed pinned link {}", pin.display()))?;
    tracing::warn!(
        %iface,
        link = %pin.display(),
        "the pinned XDP link was severed (its interface was deleted): replaced by a new attachment"
    );
    Ok(())
}

fn attach_fresh(
    prog: &mut Xdp,
    iface: &str,
    mode: crate::config::XdpMode,
) -> Result<(Attachment, aya::programs::xdp::XdpLinkId)> {
    use crate::config::XdpMode as Mode;
    use aya::programs::XdpMode as Flags;
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
    Ok((how, id))
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
    // Empty unless a tracer holds it (then it stays, harmless, until the next unpin).
    let _ = std::fs::remove_dir(pin_dir.join(super::TRACE_LOCK_DIR));
    pinned::release(pin_dir)
}
