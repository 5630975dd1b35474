//! Talking to BIRD through `birdc`: reconfigure after the include file changed, and read the
//! state of the agent's protocols.

use anyhow::{bail, Context, Result};
use std::{path::Path, time::Duration};
use tokio::process::Command;

/// Longest a `birdc` call may take; BIRD answers in milliseconds when it is alive.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// One of the agent's protocols, from `birdc show protocols all`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    /// "BGP", "Static", ...
    pub proto: String,
    /// "up", "start", "down", ...
    pub state: String,
    /// BGP's session state ("Established", "Active", "Connect", ...), BGP protocols only.
    pub bgp_state: Option<String>,
    /// Why the protocol last went down or failed to connect, when BIRD says.
    pub last_error: Option<String>,
}

impl Protocol {
    pub fn established(&self) -> bool {
        self.bgp_state.as_deref() == Some("Established")
    }

    /// The session's state in a few words: "Established", "Active (Socket: Connection
    /// refused)", or the protocol state for other protocols.
    pub fn summary(&self) -> String {
        let state = self.bgp_state.as_deref().unwrap_or(&self.state);
        match &self.last_error {
            Some(e) if !self.established() => format!("{state} ({e})"),
            _ => state.to_string(),
        }
    }
}

/// The agent's protocols all have names starting so (`render::STATIC_V4`, `peer_protocol`).
const OUR_PROTOCOLS: &str = "\"lb_*\"";

async fn birdc(birdc: &Path, socket: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(birdc);
    cmd.arg("-s").arg(socket).args(args).kill_on_drop(true);
    let out = tokio::time::timeout(BIRDC_TIMEOUT, cmd.output())
        .await
        .with_context(|| format!("{} did not answer within 5 s", birdc.display()))?
        .with_context(|| format!("running {}", birdc.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{} {}: {}", birdc.display(), args.join(" "), text.trim());
    }
    Ok(text)
}

/// `birdc configure`: BIRD re-reads its configuration, with our include file.
pub async fn configure(birdc_path: &Path, socket: &Path) -> Result<()> {
    let text = birdc(birdc_path, socket, &["configure"]).await?;
    check_configure(&text)
}

fn check_configure(text: &str) -> Result<()> {
    let accepted = text.lines().any(|l| {
        let l = l.trim();
        l.starts_with("Reconfigur") && !l.contains("ignored")
    });
    if !accepted {
        let detail: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("BIRD ") && !l.starts_with("Reading"))
            .collect();
        bail!("BIRD rejected the configuration: {}", detail.join("; "));
    }
    Ok(())
}

/// The agent's protocols (`birdc show protocols all "lb_*"`), parsed.
pub async fn protocols(birdc_path: &Path, socket: &Path) -> Result<Vec<Protocol>> {
    match birdc(
        birdc_path,
        socket,
        &["show", "protocols", "all", OUR_PROTOCOLS],
    )
    .await
    {
        Ok(text) => Ok(parse_protocols(&text)),
        // birdc fails when the pattern matches nothing: BIRD runs, without our include.
        Err(e) if format!("{e:#}").contains("No protocols match") => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// Parses `show protocols all`. Each protocol's block starts with its summary line, whose
/// first four columns (name, protocol, table, state) never contain spaces; the columns after
/// them depend on BIRD's `timeformat` (one word or two), so details come from the labelled
/// lines of the block instead ("BGP state:", "Last error:").
fn parse_protocols(text: &str) -> Vec<Protocol> {
    let mut out: Vec<Protocol> = Vec::new();
    for line in text.lines() {
        if line.trim().is_empty() {
            continue;
        }
        if !line.starts_with([' ', '\t']) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let heading = matches!(fields.first(), Some(&("BIRD" | "Name")));
            if fields.len() >= 4 && !heading {
                out.push(Protocol {
                    name: fields[0].to_string(),
                    proto: fields[1].to_string(),
                    state: fields[3].to_string(),
                    ..Protocol::default()
                });
            }
            continue;
        }
        let (Some(p), Some((key, value))) = (out.last_mut(), line.trim().split_once(':')) else {
            continue;
        };
        let value = value.trim().to_string();
        match key {
            "BGP state" if p.bgp_state.is_none() => p.bgp_state = Some(value),
            "Last error" if p.last_error.is_none() && !value.is_empty() => {
                p.last_error = Some(value)
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configure_outcomes() {
        assert!(check_configure(
            "BIRD 2.0.12 ready.\nReading configuration from /etc/bird/bird.conf\nReconfigured\n"
        )
        .is_ok());
        assert!(check_configure("BIRD 2.0.12 ready.\nReconfiguration in progress\n").is_ok());
        let err = check_configure(
            "BIRD 2.0.12 ready.\nReading configuration from /etc/bird/bird.conf\n/etc/bird/lb-agent/vips.conf:7:3 syntax error, unexpected CF_SYM_UNDEFINED\n",
        )
        .unwrap_err();
        assert!(
            format!("{err}").contains("vips.conf:7:3 syntax error"),
            "{err}"
        );
    }

    /// `show protocols all "lb_*"` of BIRD 2.0.12 (shortened) with `timeformat protocol iso
    /// long`: two-word times, which broke the column parsing this replaced.
    const ISO_LONG: &str = "BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
lb_vips4   Static     lb_vip_routes4 up     2026-11-30 20:21:26  
  Channel ipv4
    State:          UP
    Table:          lb_vip_routes4
    Preference:     200
    Routes:         1 imported, 0 exported, 1 preferred

lb_peer_198_18_0_1 BGP        ---        up     2026-11-30 20:21:34  Established   
  BGP state:          Established
    Neighbor address: 198.18.0.1
    Neighbor AS:      65000
    Local AS:         65010
    Hold timer:       2.1/3
  Channel ipv4
    State:          UP

lb_peer_198_18_0_5 BGP        ---        start  2026-11-30 20:21:26  Active        Socket: Connection refused
  BGP state:          Active
    Neighbor address: 198.18.0.5
    Connect delay:    3.1/5
    Last error:       Socket: Connection refused
";

    #[test]
    fn parses_show_protocols_all_whatever_the_time_format() {
        let p = parse_protocols(ISO_LONG);
        assert_eq!(p.len(), 3);
        assert_eq!(
            p[0],
            Protocol {
                name: "lb_vips4".into(),
                proto: "Static".into(),
                state: "up".into(),
                bgp_state: None,
                last_error: None,
            }
        );
        assert!(p[1].established());
        assert_eq!(p[1].summary(), "Established");
        assert_eq!(p[2].state, "start");
        assert!(!p[2].established());
        assert_eq!(p[2].summary(), "Active (Socket: Connection refused)");
        // The default time format (one word) gives the same.
        let short = ISO_LONG.replace("2026-11-30 20:21:34", "20:21:34.123");
        assert_eq!(parse_protocols(&short)[1], p[1]);
    }

    #[test]
    fn odd_output_gives_no_protocols_rather_than_garbage() {
        assert!(parse_protocols("").is_empty());
        assert!(parse_protocols("BIRD 2.0.12 ready.\n").is_empty());
        // Detail lines without a protocol before them are ignored.
        assert!(parse_protocols("  BGP state: Established\n").is_empty());
        let p = parse_protocols("lb_peer_x BGP --- down\n  BGP state:\n");
        assert_eq!(p[0].bgp_state.as_deref(), Some(""));
        assert!(!p[0].established());
    }
}
