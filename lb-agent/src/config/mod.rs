//! The agent's configuration file (TOML). Unknown keys are rejected; every error names the key
//! and the line.
//!
//! `schema` holds the types and defaults, `validate` the rules serde cannot express, `locate`
//! the key path and line of an error; `read` reads the file (regular files only, capped, off
//! the runtime with a timeout); `bgp` is the optional `[bgp]` section.

use std::path::Path;
use toml::de::DeTable;

mod bgp;
mod check;
mod datapath;
mod locate;
mod read;
mod schema;
mod validate;

#[cfg(test)]
mod tests;

pub use bgp::{BgpConfig, Community, Neighbor};
pub use check::{host_name, parse_ca_pem, read_ca_file, CaCerts, StatusItem, StatusSet};
pub use read::{read_text, Reader, MAX_BYTES, READ_TIMEOUT};
pub use schema::{
    AdminState, AgentConfig, AllDown, BackendConfig, CheckKind, CheckVia, Config, GatewayMac,
    HashMode, HealthCheckConfig, Mac, Protocol, VipConfig, XdpMode,
};
pub use validate::{
    interface_name_problem, parse_weight, weight_problem, Weight, RUNTIME_ZERO_WEIGHT_HINT,
    WEIGHT_RANGE,
};

/// Reads and validates the configuration file at `path`; errors are `path:LINE: key: problem`.
/// Only a regular file of at most [`MAX_BYTES`] is read ([`read_text`]); this blocks on the
/// file system, so the running agent calls it through a [`Reader`].
pub fn load(path: &Path) -> anyhow::Result<Config> {
    let text = read_text(path)?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates a configuration; `origin` (usually the file name) prefixes every error
/// as `origin:LINE: key.path: problem`. With several semantic problems, all are reported, one
/// per line, in file order. Once the file is valid, the health checks' CA files are read
/// (bounded, see [`read_ca_file`]): callers already run this off the control path.
pub fn parse(text: &str, origin: &str) -> anyhow::Result<Config> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc,
        Err(err) => return Err(locate::toml_error(text, origin, &err, true)),
    };
    let mut config: Config =
        toml::from_str(text).map_err(|err| locate::toml_error(text, origin, &err, false))?;
    let mut problems = config.problems();
    if problems.is_empty() {
        problems = config.read_ca_files();
        if problems.is_empty() {
            return Ok(config);
        }
    }
    Err(locate::problems_error(
        text,
        origin,
        doc.get_ref(),
        &problems,
    ))
}
