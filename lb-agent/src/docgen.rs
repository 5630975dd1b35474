//! Shell completions and man pages generated from the command-line definition, so they cannot
//! drift from it. `cargo xtask package` runs the hidden `completions` and `man` commands.

use crate::cli::Cli;
use anyhow::{Context, Result};
use clap::{Command, CommandFactory};
use clap_complete::Shell;
use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// The command line without its hidden commands: clap_complete's bash script would offer them.
fn visible_command() -> Command {
    let full = Cli::command();
    let mut cmd = Command::new("lb-agent")
        .subcommand_required(true)
        .version(env!("CARGO_PKG_VERSION"));
    cmd = cmd.args(full.get_arguments().cloned());
    cmd.subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned())
}

/// The completion script for `shell`.
pub fn completions(shell: Shell, out: &mut dyn Write) -> Result<()> {
    let mut cmd = visible_command();
    clap_complete::generate(shell, &mut cmd, "lb-agent", out);
    out.flush().context("writing the completion script")
}

/// One man page per command and subcommand (lb-agent.1, lb-agent-run.1, lb-agent-decap-attach.1,
/// ...) into `dir`, created if missing. Returns the pages written, sorted.
pub fn man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "creating {}: give a directory lb-agent may create or write to",
            dir.display()
        )
    })?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing the man pages into {}", dir.display()))?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "1"))
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("lb-docgen-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn a_page_for_every_visible_command_and_none_for_hidden_ones() {
        let dir = scratch("man");
        let pages = man_pages(&dir).expect("man pages");
        let names: Vec<String> = pages
            .iter()
            .filter_map(|p| p.file_name()?.to_str().map(String::from))
            .collect();
        for cmd in [
            "",
            "-run",
            "-check",
            "-decap",
            "-decap-attach",
            "-decap-detach",
            "-status",
            "-stats",
            "-backend",
            "-reload",
            "-doctor",
        ] {
            let page = format!("lb-agent{cmd}.1");
            assert!(names.contains(&page), "{page} missing from {names:?}");
        }
        assert!(
            !names
                .iter()
                .any(|n| n.contains("completions") || n.contains("-man.")),
            "{names:?}"
        );
        let run = std::fs::read_to_string(dir.join("lb-agent-run.1")).expect("lb-agent-run.1");
        assert!(run.contains("detach\\-on\\-exit"), "{run}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn man_into_a_file_fails_naming_it() {
        let file = scratch("file");
        std::fs::write(&file, "").expect("scratch file");
        let err = man_pages(&file).expect_err("a regular file is no directory");
        assert!(
            format!("{err:#}").contains(&file.display().to_string()),
            "{err:#}"
        );
        let _ = std::fs::remove_file(&file);
    }

    #[test]
    fn unknown_shell_and_missing_dir_are_refused() {
        use clap::Parser;
        for bad in [
            &["lb-agent", "completions", "tcsh"][..],
            &["lb-agent", "completions"],
            &["lb-agent", "man"],
        ] {
            assert!(Cli::try_parse_from(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn completions_name_the_subcommands() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).expect("completion script");
            let text = String::from_utf8(out).expect("UTF-8");
            for word in ["run", "decap", "doctor", "detach-on-exit"] {
                assert!(text.contains(word), "{shell}: no {word}");
            }
            assert!(
                !text.contains("completions"),
                "{shell}: the hidden command leaked"
            );
        }
    }
}
