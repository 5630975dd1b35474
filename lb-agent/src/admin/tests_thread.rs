//! The admin thread: its listeners answer, its threads run at [`NICE`], a bind failure is
//! the start's error.

use super::{fetch_status, spawn_thread, tests::TempDir, Reporter, StatusReport, NICE};
use crate::config::{parse, AgentConfig};
use std::{net::TcpListener, sync::Arc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn agent(listen: &str, dir: &TempDir) -> AgentConfig {
    let text = format!(
        "[agent]\ninterface = \"eth0\"\nadmin_listen = \"{listen}\"\ncontrol_socket = \"{}\"\n\
         encap_source_v4 = \"198.18.0.2\"\n\n[[vip]]\nname = \"web\"\naddress = \"198.18.0.10\"\n\
         port = 80\nprotocol = \"tcp\"\n\n[[vip.backend]]\naddress = \"198.18.1.1\"\n",
        dir.0.join("admin.sock").display()
    );
    parse(&text, "test").unwrap().agent
}

fn reporter() -> Reporter {
    Arc::new(|| StatusReport {
        interface: "eth0".to_owned(),
        xdp_mode: "native".to_owned(),
        table_size: 65_537,
        uptime_secs: 1,
        config_path: "/etc/lb-agent/lb.toml".to_owned(),
        vips: Vec::new(),
        counters: Default::default(),
        bgp: None,
        conn_sweep: None,
        flow_hash_key_digest: "none".to_owned(),
        agent: Default::default(),
        probes: Vec::new(),
    })
}

/// The nice value of every thread of this process whose name `is` (field 19 of its stat; the
/// kernel keeps 15 bytes of a name).
fn nice_of(is: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut found = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (comm, rest) = stat.split_once(") ").unwrap();
        let name = comm.split_once('(').unwrap().1;
        if is(name) {
            let fields: Vec<&str> = rest.split(' ').collect();
            // Fields after the name start at 3 (state); nice is field 19.
            found.push(fields[19 - 3].parse().unwrap());
        }
    }
    found
}

#[tokio::test]
async fn listeners_answer_from_a_thread_below_the_agents_priority() {
    let dir = TempDir::new("thread");
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let shutdown = CancellationToken::new();
    let agent = agent(&port.to_string(), &dir);
    let handle = spawn_thread(&agent, tx, reporter(), shutdown.clone())
        .await
        .unwrap();
    // A status read goes through the admin runtime's blocking pool, so both kinds of thread
    // exist when it has answered.
    let status = fetch_status(port).await.unwrap();
    assert_eq!(status.interface, "eth0");
    // (The other test of this file may run an admin thread of its own meanwhile.)
    for threads in [
        nice_of(|n| n == "lb-admin"),
        nice_of(|n| n.starts_with("lb-admin-block")),
    ] {
        assert!(
            !threads.is_empty() && threads.iter().all(|&n| n == NICE),
            "{threads:?}"
        );
    }
    // The rest of the process keeps its priority.
    assert_eq!(
        nice_of(|n| !n.starts_with("lb-admin")).iter().max(),
        Some(&0)
    );
    shutdown.cancel();
    handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_busy_port_is_the_starts_error() {
    let dir = TempDir::new("thread-busy");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap();
    let (tx, _rx) = mpsc::channel(8);
    let agent = agent(&port.to_string(), &dir);
    let e = spawn_thread(&agent, tx, reporter(), CancellationToken::new())
        .await
        .unwrap_err();
    let e = format!("{e:#}");
    assert!(
        e.contains("agent.admin_listen") && e.contains(&port.to_string()),
        "{e}"
    );
}
