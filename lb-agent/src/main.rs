use lb_agent::cli::{self, Cli, Command, LogFormat};
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn init_logging(format: LogFormat, level: &str) {
    // RUST_LOG wins over the configuration's log_level. netlink-packet-route warns about every
    // attribute newer kernels add; that is noise to an operator.
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(format!("{level},netlink_packet_route=error")))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn main() -> std::process::ExitCode {
    lb_agent::limits::tune_malloc();
    let cli = Cli::parse_checked();
    let level = match &cli.command {
        Command::Run { config, .. } => lb_agent::config::load(config)
            .map(|c| c.agent.log_level)
            .unwrap_or_else(|_| "info".to_string()),
        _ => "warn".to_string(),
    };
    init_logging(cli.log_format, &level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::execute(cli)) {
        Ok(code) => std::process::ExitCode::from(code as u8),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
