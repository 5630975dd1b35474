//! `cargo xtask bench`: the benchmark suite. Each part is a release binary of lb-tests that
//! prints one Markdown section on stdout (progress goes to stderr); with `--write` each section
//! replaces its marked block in docs/benchmarks.md, so the prose around the figures stays
//! hand-written while every figure comes from the run.

use std::fs;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::build::{build, cargo_with_ebpf, ebpf_dir};
use crate::cmd::{run, stdout_of};
use crate::paths::{host_target_dir, workspace_root};

pub struct Part {
    pub name: &'static str,
    pub bin: &'static str,
    pub about: &'static str,
}

/// In the order they run: the quick in-kernel parts first, the long end-to-end ones last.
pub const PARTS: &[Part] = &[
    Part {
        name: "datapath",
        bin: "bench",
        about: "per-packet cost of each path (BPF_PROG_TEST_RUN) against the MAC-swap floor",
    },
    Part {
        name: "conntrack",
        bin: "bench_conntrack",
        about: "connection-table cost and hit rate from 1k to 1M flows; SYN flood",
    },
    Part {
        name: "forwarding",
        bin: "bench_forwarding",
        about: "live-frames forwarding rate through veths against the reflector",
    },
    Part {
        name: "control",
        bin: "bench_control",
        about: "Maglev build, publish, agent memory, health-check lag at 10k backends",
    },
    Part {
        name: "proxy",
        bin: "bench_proxy",
        about: "HTTP through the balancer, HAProxy and direct: rps, latency, CPU per request",
    },
];

const DOC: &str = "docs/benchmarks.md";

pub fn bench(selected: &[String], write: bool) -> Result<()> {
    let parts = select(selected)?;
    // Release agent: the control-plane and proxy parts start it as a process.
    let agent = build(true)?;
    let ebpf = ebpf_dir(true);
    run(cargo_with_ebpf(&ebpf).args(["build", "--release", "-p", "lb-tests", "--bins"]))?;
    let bins = host_target_dir().join("release");
    let doc = workspace_root().join(DOC);
    if write {
        update_doc(&doc, "machine", &machine(selected)?)?;
    }
    for part in parts {
        eprintln!("==> bench: {} ({})", part.name, part.about);
        let output = Command::new(bins.join(part.bin))
            .env("LB_AGENT_BIN", &agent)
            .env("LB_EBPF_DIR", &ebpf)
            .stderr(Stdio::inherit())
            .output()
            .with_context(|| format!("running {}", part.bin))?;
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        print!("{text}");
        if !output.status.success() {
            bail!("bench part {} failed ({})", part.name, output.status);
        }
        // Written as each part finishes: a later part's failure keeps the earlier figures.
        if write {
            update_doc(&doc, part.name, &text)?;
            eprintln!("wrote the {} section of {DOC}", part.name);
        }
    }
    Ok(())
}

fn update_doc(path: &std::path::Path, block: &str, body: &str) -> Result<()> {
    let doc = fs::read_to_string(path).with_context(|| format!("reading {DOC}"))?;
    fs::write(path, replace_block(&doc, block, body)).with_context(|| format!("writing {DOC}"))
}

fn select(selected: &[String]) -> Result<Vec<&'static Part>> {
    if selected.is_empty() {
        return Ok(PARTS.iter().collect());
    }
    selected
        .iter()
        .map(|name| {
            PARTS.iter().find(|p| p.name == name).with_context(|| {
                let names: Vec<&str> = PARTS.iter().map(|p| p.name).collect();
                format!("no bench part {name:?}; parts: {}", names.join(", "))
            })
        })
        .collect()
}

/// The run's provenance: command, date, kernel and CPU.
fn machine(selected: &[String]) -> Result<String> {
    let kernel = stdout_of(Command::new("uname").arg("-r"))?;
    let date = stdout_of(Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]))?;
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mut command = String::from("cargo xtask bench --write");
    for name in selected {
        command.push(' ');
        command.push_str(name);
    }
    Ok(format!(
        "Last written by `{command}` on {date}: Linux {kernel}, {cores} × {model}.\n",
        date = date.trim(),
        kernel = kernel.trim(),
    ))
}

/// Replaces the text between `<!-- bench:NAME -->` and `<!-- /bench:NAME -->`, or appends the
/// block when the document has none yet.
fn replace_block(doc: &str, name: &str, body: &str) -> String {
    let open = format!("<!-- bench:{name} -->");
    let close = format!("<!-- /bench:{name} -->");
    let block = format!("{open}\n{}\n{close}", body.trim_end());
    match (doc.find(&open), doc.find(&close)) {
        (Some(start), Some(end)) if end > start => {
            format!("{}{block}{}", &doc[..start], &doc[end + close.len()..])
        }
        _ => format!("{}\n\n{block}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::replace_block;

    #[test]
    fn replaces_only_the_named_block() {
        let doc = "intro\n<!-- bench:a -->\nold a\n<!-- /bench:a -->\nmiddle\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\nend\n";
        let out = replace_block(doc, "a", "new a\n");
        assert_eq!(
            out,
            "intro\n<!-- bench:a -->\nnew a\n<!-- /bench:a -->\nmiddle\n<!-- bench:b -->\nold b\n<!-- /bench:b -->\nend\n"
        );
    }

    #[test]
    fn appends_a_missing_block() {
        let out = replace_block("intro\n", "c", "figures");
        assert_eq!(
            out,
            "intro\n\n<!-- bench:c -->\nfigures\n<!-- /bench:c -->\n"
        );
    }
}
