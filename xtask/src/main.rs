//! Developer tasks for the load balancer workspace: `cargo xtask <command>`.
//!
//! The eBPF programs (lb-ebpf) need the nightly toolchain, `-Z build-std=core`
//! and bpf-linker; everything else builds with the stable toolchain that runs
//! this tool. lb-agent embeds the eBPF objects found in `$LB_EBPF_DIR`, which
//! every command here sets.

mod bench;
mod build;
mod cmd;
mod package;
mod paths;
mod run;
mod setup;
mod test;

use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Build, test and run the XDP load balancer",
    long_about = "Build, test and run the XDP load balancer.\n\n\
        The eBPF programs are built with `cargo +nightly -Z build-std=core` for \
        bpfel-unknown-none into target/ebpf/; lb-agent embeds them through \
        LB_EBPF_DIR. Run `cargo xtask setup` once to install what that needs.",
    after_help = "Every command echoes the commands it runs as `$ ...` on stderr."
)]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what the build and the tests need (idempotent)
    #[command(
        long_about = "Install what the build and the tests need. Idempotent: each \
        step checks first and prints what it does or skips.\n\n\
        1. the nightly toolchain (rustup toolchain install nightly --profile minimal)\n\
        2. rust-src for nightly (for -Z build-std=core)\n\
        3. $HOME/.local/share/lb-llvm/lib: libLLVM.so symlinks to the nightly's libLLVM\n\
        4. bpf-linker 0.13, built against that LLVM (cargo install, LLVM_PREFIX set)\n\
        5. cargo-deb 3.8.0 for `package` (cargo install --locked)\n\
        6. Debian packages for missing test and benchmark tools (ip, ethtool, ping, sysctl, \
        nsenter, curl, openssl, nft, birdc, haproxy, wrk, man, systemd-analyze, promtool, tcpdump, \
        bpftool) via apt-get (root only)\n\
        7. bpffs mounted at /sys/fs/bpf (root only)"
    )]
    Setup,

    /// Build the eBPF objects (lb, decap) with the nightly toolchain
    #[command(long_about = "Build the eBPF objects (lb, decap):\n\n  \
        cargo +nightly build -p lb-ebpf --target bpfel-unknown-none -Z build-std=core \
        --release --target-dir target/ebpf\n\n\
        Output: target/ebpf/bpfel-unknown-none/release/{lb,decap} (debug/ with --debug). \
        Stable-toolchain variables inherited from `cargo xtask` (RUSTUP_TOOLCHAIN, RUSTC, \
        RUSTFLAGS, CARGO_TARGET_DIR, ...) are removed first.")]
    BuildEbpf {
        /// Build the dev profile instead of release
        #[arg(long)]
        debug: bool,
    },

    /// Build the eBPF objects, then lb-agent embedding them
    #[command(
        long_about = "Run build-ebpf, then `cargo build -p lb-agent --release` with \
        LB_EBPF_DIR set, and print the agent binary's path on stdout."
    )]
    Build {
        /// Build the dev profile (eBPF and agent) instead of release
        #[arg(long)]
        debug: bool,
    },

    /// Run setup, build-ebpf, fmt, clippy and the whole test suite (as root)
    #[command(long_about = "Run, in order, stopping at the first failure:\n\n\
        1. setup\n\
        2. build-ebpf (release)\n\
        3. cargo fmt --all --check\n\
        4. cargo clippy --workspace --all-targets -- -D warnings\n\
        5. cargo +nightly clippy -p lb-ebpf --target bpfel-unknown-none -Z build-std=core \
        -- -D warnings\n\
        6. cargo test --workspace [ARGS]\n\
        7. package --install-test (after the suite: it installs /usr/bin/lb-agent for a moment)\n\n\
        Must run as root (the tests load XDP programs and create network namespaces). \
        ARGS go to `cargo test`; to pass arguments to the test binaries, add another \
        `--`: `cargo xtask test -- -- --nocapture`.")]
    Test {
        /// Extra arguments for `cargo test --workspace`
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },

    /// Build (release), then run the benchmark suite or some of its parts
    #[command(
        long_about = "Run build (release), build lb-tests' binaries, then each \
        benchmark part's binary in turn; each prints one Markdown section. Parts: datapath, \
        conntrack, forwarding, control, proxy (all when none is named). With --write, each \
        section replaces its `<!-- bench:PART -->` block in docs/benchmarks.md, with the \
        machine and date."
    )]
    Bench {
        /// Replace the parts' sections in docs/benchmarks.md
        #[arg(long)]
        write: bool,
        /// Parts to run (default: all)
        #[arg(value_name = "PART")]
        parts: Vec<String>,
    },

    /// Build the Debian package: release binary, units, example config, completions, man pages
    #[command(
        long_about = "Run build (release), generate the shell completions (bash, zsh, fish) \
        and a man page per command with the binary's hidden `completions` and `man` commands \
        into <target>/release/package/, then `cargo deb -p lb-agent --no-build` (cargo-deb, \
        installed by setup). Prints the .deb's path on stdout.\n\n\
        With --install-test (root; `cargo xtask test` runs it): dpkg -i the package, run \
        `lb-agent --version`, `lb-agent check` on /etc/lb-agent/lb.toml, `man -w`, \
        `systemd-analyze verify` on the units, then dpkg -r (files gone, conffile kept) and \
        dpkg -P. Refuses to run where lb-agent is already installed."
    )]
    Package {
        /// Install, check, remove and purge the package (root)
        #[arg(long)]
        install_test: bool,
        /// Embed the eBPF objects (lb, decap) from DIR instead of building them
        #[arg(long, value_name = "DIR")]
        ebpf_dir: Option<std::path::PathBuf>,
    },

    /// Build everything (release), then run the agent
    #[command(
        long_about = "Run build, then `target/release/lb-agent [ARGS]` from the \
        current directory."
    )]
    Run {
        /// Arguments for lb-agent
        #[arg(last = true, value_name = "ARGS")]
        args: Vec<String>,
    },

    /// Build everything (release), then run the namespace demo
    #[command(long_about = "Run build, then \
        `cargo run --release -p lb-tests --bin demo -- [--keep]` with LB_EBPF_DIR set.")]
    Demo {
        /// Leave the demo's namespaces and links in place when it exits
        #[arg(long)]
        keep: bool,
    },
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Printed by hand: `fn main() -> Result` would add a backtrace
            // whenever RUST_BACKTRACE is set, burying the failing command.
            eprintln!("error: {err}");
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(task: Task) -> Result<()> {
    match task {
        Task::Setup => setup::setup(),
        Task::BuildEbpf { debug } => build::build_ebpf(!debug).map(|_| ()),
        Task::Build { debug } => {
            let agent = build::build(!debug)?;
            println!("{}", agent.display());
            Ok(())
        }
        Task::Test { args } => test::test(&args),
        Task::Bench { write, parts } => bench::bench(&parts, write),
        Task::Package {
            install_test,
            ebpf_dir,
        } => {
            let deb = package::package(ebpf_dir.as_deref())?;
            if install_test {
                package::verify(&deb)?;
            }
            println!("{}", deb.display());
            Ok(())
        }
        Task::Run { args } => run::agent(&args),
        Task::Demo { keep } => run::demo(keep),
    }
}
