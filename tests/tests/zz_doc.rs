//! Scratch (not committed): real output for docs/operations.md "Debugging a connection".
use anyhow::Result;
use lb_tests::{
    agentproc::{agent_binary, ADMIN},
    netns::{command, sh},
    scenario::{backend_name, Options, Scenario},
    topo::{CLIENT_V4, VIP_V4},
};
use std::{process::Stdio, time::Duration};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn get_from(port: u16) -> Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind((CLIENT_V4, port).into())?;
    let mut s = socket.connect((VIP_V4, 80).into()).await?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: vip\r\nConnection: close\r\n\r\n")
        .await?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

fn agent(sc: &Scenario, args: &[&str]) -> Result<String> {
    let pin = sc.topo.pin_dir().display().to_string();
    let mut a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    a.extend(["--admin".into(), ADMIN.into()]);
    if args[0] == "trace" {
        a.extend(["--pin-path".into(), pin]);
    }
    let out = command(&sc.topo.lb, agent_binary()?).args(&a).output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn traced(sc: &Scenario, args: &[&str], act: impl FnOnce() -> Result<()>) -> Result<String> {
    let pin = sc.topo.pin_dir().display().to_string();
    let child = command(&sc.topo.lb, agent_binary()?)
        .args(["trace", "--admin", ADMIN, "--pin-path", &pin])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(700));
    act()?;
    std::thread::sleep(Duration::from_millis(500));
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output()?;
    Ok(format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

#[test]
fn doc_output() -> Result<()> {
    let mut sc = Scenario::start("doc", Options::default())?;
    println!("=== status\n{}", agent(&sc, &["status"])?);
    let pcap = std::env::temp_dir().join(&sc.topo.prefix).join("c.pcap");
    let pcap_s = pcap.display().to_string();
    let mut answer = String::new();
    let out = traced(&sc, &["--vip", "web", "--pcap", &pcap_s], || {
        answer = sc.client.run(get_from(40312))??;
        Ok(())
    })?;
    println!("=== trace ok\n{out}\n=== answer\n{answer}");
    println!(
        "=== tcpdump\n{}",
        sh(Some(&sc.topo.lb), &format!("tcpdump -r {pcap_s} -nn -c 4"))?
    );
    // Large upload: too big for the tunnel.
    let mut reply = String::new();
    let out = traced(&sc, &["--vip", "web"], || {
        reply = sc.client.run(post_from(40313))??;
        Ok(())
    })?;
    println!("=== trace post\n{out}\n=== reply\n{reply}");
    // A fragment to the VIP.
    let mac = lb_mac(&sc)?;
    let mut frame = lb_tests::frames::tcp4(
        CLIENT_V4,
        40314,
        VIP_V4,
        80,
        lb_tests::frames::Tcp::Ack,
        b"part",
    );
    frame[..6].copy_from_slice(&mac);
    frame[20] |= 0x20; // MF
    lb_tests::frames::fix_ipv4_checksum(&mut frame);
    let out = traced(&sc, &["--verdict", "drop"], || {
        lb_tests::inject::inject(
            &sc.topo.router,
            &lb_tests::topo::router_link(0),
            vec![frame.clone()],
        )?;
        Ok(())
    })?;
    println!("=== trace drop\n{out}");
    Ok(())
}

async fn post_from(port: u16) -> Result<String> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind((CLIENT_V4, port).into())?;
    let mut s = socket.connect((VIP_V4, 80).into()).await?;
    let body = vec![b'x'; 4000];
    s.write_all(
        format!(
            "POST / HTTP/1.1\r\nHost: vip\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await?;
    s.write_all(&body).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut reply)).await??;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

fn lb_mac(sc: &Scenario) -> Result<[u8; 6]> {
    let line = sh(Some(&sc.topo.lb), "ip -o link show l0")?;
    let text = line
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or("");
    let mac: Vec<u8> = text
        .split(':')
        .filter_map(|h| u8::from_str_radix(h, 16).ok())
        .collect();
    mac.try_into()
        .map_err(|_| anyhow::anyhow!("LB MAC from {line}"))
}
