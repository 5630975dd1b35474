//! `lb-agent backend ACTION VIP BACKEND [WEIGHT]`: the actions, the control API path of each,
//! and the checks clap cannot express (WEIGHT belongs to `weight` alone).

use crate::config::{self, Weight};
use clap::{error::ErrorKind, CommandFactory as _, ValueEnum};
use std::net::IpAddr;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackendAction {
    /// Keep existing connections, send no new ones
    Drain,
    /// Back to active after a drain
    Undrain,
    /// Take out of service: its connections move at their next packet
    Disable,
    /// Back to active after disable
    Enable,
    /// Set its weight to WEIGHT until the next reload of the file (new flows only)
    Weight,
}

impl BackendAction {
    /// The control API's word for the action.
    fn verb(self) -> &'static str {
        match self {
            BackendAction::Drain => "drain",
            BackendAction::Undrain => "undrain",
            BackendAction::Disable => "disable",
            BackendAction::Enable => "enable",
            BackendAction::Weight => "weight",
        }
    }
}

/// WEIGHT: what the file accepts for `weight` (1..=10000), so the agent never gets a weight a
/// reload would refuse; 0 is refused with the advice to drain.
pub fn weight_arg(text: &str) -> Result<Weight, String> {
    config::parse_weight(text)
}

/// The control API path of an action. `weight` is checked by [`check`] first.
pub fn path(action: BackendAction, vip: &str, backend: IpAddr, weight: Option<Weight>) -> String {
    let base = format!("/vips/{vip}/backends/{backend}/{}", action.verb());
    match weight {
        Some(weight) => format!("{base}/{weight}"),
        None => base,
    }
}

/// WEIGHT with another action than `weight` is a usage error (clap's `required_if_eq` covers
/// the other direction): a silently ignored weight would look applied.
pub fn check(action: BackendAction, weight: Option<Weight>) -> Result<(), clap::Error> {
    match (action, weight) {
        (BackendAction::Weight, _) | (_, None) => Ok(()),
        (action, Some(weight)) => {
            let mut cmd = super::Cli::command();
            // Gives the subcommand its full name for the usage line.
            cmd.build();
            let message = format!(
                "WEIGHT ({weight}) is only for `lb-agent backend weight`, not `{}`",
                action.verb()
            );
            let error = match cmd.find_subcommand_mut("backend") {
                Some(backend) => backend.error(ErrorKind::ArgumentConflict, message),
                None => cmd.error(ErrorKind::ArgumentConflict, message),
            };
            Err(error)
        }
    }
}
