//! Talking to BIRD through `birdc`: reconfigure after the include file changed, and read the
//! state of the agent's protocols.

use anyhow::{bail, Context, Result};
use std::{path::Path, time::Duration};
use tokio::process::Command;

/// Longest a `birdc` call may take; BIRD answers in milliseconds when it is alive.
const BIRDC_TIMEOUT: Duration = Duration::from_secs(5);

/// One line of `birdc show protocols`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Protocol {
    pub name: String,
    /// "up", "start", "down", ...
    pub state: String,
    /// BGP's session state ("Established", "Active", "Connect", ...) or other detail.
    pub info: String,
}

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

/// `birdc show protocols`, parsed.
pub async fn protocols(birdc_path: &Path, socket: &Path) -> Result<Vec<Protocol>> {
    let text = birdc(birdc_path, socket, &["show", "protocols"]).await?;
    Ok(parse_protocols(&text))
}

fn parse_protocols(text: &str) -> Vec<Protocol> {
    text.lines()
        .filter_map(|line| {
            // Name Proto Table State Since Info...
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 5 || fields[0] == "Name" || fields[0] == "BIRD" {
                return None;
            }
            Some(Protocol {
                name: fields[0].to_string(),
                state: fields[3].to_string(),
                info: fields.get(5..).map(|f| f.join(" ")).unwrap_or_default(),
            })
        })
        .collect()
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

    #[test]
    fn parses_show_protocols() {
        let text = "BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\ndevice1    Device     ---        up     05:41:29.971  \nlb_vips4   Static     lb_vips4   up     05:41:29.971  \nlb_peer_198_18_0_1 BGP        ---        up     05:41:34.123  Established   \nlb_peer_198_18_0_5 BGP        ---        start  05:41:29.971  Active        Socket: Connection refused\n";
        let p = parse_protocols(text);
        assert_eq!(p.len(), 4);
        assert_eq!(p[1].name, "lb_vips4");
        assert_eq!(
            p[2],
            Protocol {
                name: "lb_peer_198_18_0_1".into(),
                state: "up".into(),
                info: "Established".into()
            }
        );
        assert_eq!(p[3].state, "start");
        assert_eq!(p[3].info, "Active Socket: Connection refused");
    }
}
