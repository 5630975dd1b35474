//! The doctor's tests: report rendering, the host checks, and an end-to-end run in a pair of
//! network namespaces (root only) for the interface, balancer and backend checks.

use super::*;
use crate::{
    config::BgpConfig,
    dataplane::{self, Decap},
    netinfo,
};
use std::{net::IpAddr, path::Path};

fn finding(verdict: Verdict, check: &str, fix: Option<&str>) -> Finding {
    Finding {
        verdict,
        check: check.to_string(),
        detail: "detail".to_string(),
        fix: fix.map(str::to_string),
    }
}

#[test]
fn render_format() {
    let findings = vec![
        Finding::ok("bpffs", "mounted at /sys/fs/bpf"),
        Finding::warn("BPF JIT", "disabled", "sysctl -w net.core.bpf_jit_enable=1"),
        Finding::fail("native XDP on eth0", "no driver support", "use another NIC"),
        finding(Verdict::Ok, "ok with fix", Some("not shown")),
    ];
    let text = render(&findings);
    assert_eq!(
        text,
        "OK   bpffs: mounted at /sys/fs/bpf\n\
         WARN BPF JIT: disabled\n\
         \x20    fix: sysctl -w net.core.bpf_jit_enable=1\n\
         FAIL native XDP on eth0: no driver support\n\
         \x20    fix: use another NIC\n\
         OK   ok with fix: detail\n"
    );
    let multi = render(&[Finding::fail("x", "a\nb", "c")]);
    assert_eq!(multi, "FAIL x: a\n     b\n     fix: c\n");
}

#[test]
fn failed_only_on_fail() {
    assert!(!failed(&[]));
    assert!(!failed(&[
        finding(Verdict::Ok, "a", None),
        finding(Verdict::Warn, "b", Some("f"))
    ]));
    assert!(failed(&[
        finding(Verdict::Ok, "a", None),
        finding(Verdict::Fail, "b", Some("f"))
    ]));
}

// /proc/mounts parsing is tested with the parser, in crate::bpffs.
#[test]
fn releases() {
    assert_eq!(host::parse_release("6.18.44-fc-v669"), Some((6, 18)));
    assert_eq!(host::parse_release("5.4.0-150-generic"), Some((5, 4)));
    assert_eq!(host::parse_release("garbage"), None);
    assert!((5, 10) >= (5, 9) && (5, 4) < (5, 9) && (6, 0) > (5, 9));
}

/// On the host, without an interface: the host checks run, the interface checks are
/// skipped with a WARN, and nothing is sent anywhere.
#[tokio::test]
async fn host_checks_without_interface() {
    let findings = run(&DoctorOptions {
        iface: None,
        config: None,
        backend: false,
    })
    .await;
    let by = |name: &str| {
        findings
            .iter()
            .find(|f| f.check == name)
            .unwrap_or_else(|| panic!("no {name} finding in\n{}", render(&findings)))
    };
    assert_eq!(by("privileges").verdict, Verdict::Ok);
    assert_eq!(by("interface").verdict, Verdict::Warn);
    assert_eq!(by("kernel").verdict, Verdict::Ok, "{}", render(&findings));
    assert_eq!(
        by("BPF features").verdict,
        Verdict::Ok,
        "{}",
        render(&findings)
    );
    assert!(findings.iter().all(|f| f.check != "gateway MAC"));
    // A bad pin path is reported.
    let cfg = config_for("lbdoc-none0", 1500, "pin_path = \"/tmp/lbdoc-pins\"\n");
    let bad = host::bpffs(Some(&cfg));
    let pin = bad
        .iter()
        .find(|f| f.check == "pin_path")
        .expect("pin_path");
    assert_eq!(pin.verdict, Verdict::Fail, "{}", render(&bad));
}

fn config_for(iface: &str, mtu: u16, extra_agent: &str) -> Config {
    let text = format!(
        "[agent]\ninterface = \"{iface}\"\nmtu = {mtu}\nencap_source_v4 = \"198.18.250.1\"\n\
         {extra_agent}\n\
         [[vip]]\nname = \"web\"\naddress = \"198.18.251.10\"\nport = 80\nprotocol = \"tcp\"\n\
         [[vip.backend]]\naddress = \"198.18.250.1\"\n"
    );
    crate::config::parse(&text, "doctor-test").expect("valid test config")
}

// ---- BGP ------------------------------------------------------------------------------

fn bgp_config(socket: &str, include: &str) -> BgpConfig {
    toml::from_str(&format!(
        "local_as = 65010\nbird_socket = \"{socket}\"\ninclude_file = \"{include}\"\n\
         [[neighbor]]\naddress = \"198.18.0.1\"\nremote_as = 65000\n"
    ))
    .unwrap()
}

#[tokio::test]
async fn no_bird_and_no_directory_are_failures_with_fixes() {
    let cfg = bgp_config("/nonexistent/bird.ctl", "/nonexistent/lb/vips.conf");
    let findings = bgp::checks(&cfg).await;
    let dir = findings
        .iter()
        .find(|f| f.check == "BIRD include directory")
        .unwrap();
    assert_eq!(dir.verdict, Verdict::Fail);
    assert!(dir
        .fix
        .as_deref()
        .unwrap()
        .contains("mkdir -p /nonexistent/lb"));
    let bird = findings.iter().find(|f| f.check == "BIRD").unwrap();
    assert_eq!(bird.verdict, Verdict::Fail, "{bird:?}");
    assert!(bird.fix.as_deref().unwrap().contains("bgp.bird_socket"));
    // Nothing about sessions when BIRD cannot be asked.
    assert!(!findings.iter().any(|f| f.check.starts_with("BGP session")));
}

// ---- end to end inside network namespaces ----------------------------------------------

const NS_PREFIX: &str = "lbdoc-";
const LB_MAC: [u8; 6] = [0x02, 0x1b, 0xdc, 0x00, 0x00, 0x01];
const GW_MAC: [u8; 6] = [0x02, 0x1b, 0xdc, 0x00, 0x00, 0x02];

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .expect("running ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deletes the test's namespaces, also when the test panics.
struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for ns in &self.0 {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .output();
        }
    }
}

/// Remove `lbdoc-PID*` namespaces left by test processes that no longer run.
fn remove_stale_namespaces() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NS_PREFIX) else {
            continue;
        };
        let pid: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
        let alive = !pid.is_empty() && Path::new(&format!("/proc/{pid}")).exists();
        if !alive || pid == std::process::id().to_string() {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &name])
                .output();
        }
    }
}

/// Run `f` on a thread inside network namespace `ns`, with its own current-thread runtime.
fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the netns");
        use std::os::fd::AsRawFd;
        // SAFETY: setns on this thread only; the fd is valid.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

fn write_sysctl(path: &str, value: &str) {
    std::fs::write(format!("/proc/sys/{path}"), value)
        .unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

fn get<'a>(findings: &'a [Finding], check: &str) -> &'a Finding {
    findings
        .iter()
        .find(|f| f.check == check)
        .unwrap_or_else(|| panic!("no {check:?} finding in\n{}", render(findings)))
}

/// Nothing FAILs, except possibly the program load: while lb-common's layouts change, the
/// embedded eBPF object can be older than the agent (`cargo xtask build` refreshes it).
fn assert_no_fail_but_program_load(findings: &[Finding]) {
    let text = render(findings);
    for f in findings {
        assert!(
            f.verdict != Verdict::Fail || f.check == "program load",
            "{}: {text}",
            f.check
        );
    }
}

#[test]
fn end_to_end_in_netns() {
    remove_stale_namespaces();
    let ns = format!("{NS_PREFIX}{}", std::process::id());
    let gw_ns = format!("{ns}-gw");
    let _guard = Namespaces(vec![ns.clone(), gw_ns.clone()]);
    build_topology(&ns, &gw_ns);
    netinfo_facts(&ns);
    lb_mtu_too_large(&ns);
    lb_headroom_and_fixed_gateway(&ns);
    lo_without_native_xdp(&ns);
    backend_unprepared(&ns);
    backend_prepared(&ns);
}

/// `ns` with lbdoc0 (198.18.250.1/30, default route) and its veth peer lbdoc1 in `gw_ns` as the
/// gateway (198.18.250.2).
fn build_topology(ns: &str, gw_ns: &str) {
    ip(&["netns", "add", ns]);
    ip(&["netns", "add", gw_ns]);
    let lb_mac = netinfo::format_mac(&LB_MAC);
    let gw_mac = netinfo::format_mac(&GW_MAC);
    ip(&[
        "-n", ns, "link", "add", "lbdoc0", "address", &lb_mac, "type", "veth", "peer", "name",
        "lbdoc1", "address", &gw_mac, "netns", gw_ns,
    ]);
    ip(&["-n", ns, "addr", "add", "198.18.250.1/30", "dev", "lbdoc0"]);
    ip(&[
        "-n",
        gw_ns,
        "addr",
        "add",
        "198.18.250.2/30",
        "dev",
        "lbdoc1",
    ]);
    ip(&["-n", ns, "link", "set", "lo", "up"]);
    ip(&["-n", gw_ns, "link", "set", "lo", "up"]);
    ip(&["-n", ns, "link", "set", "lbdoc0", "up"]);
    ip(&["-n", gw_ns, "link", "set", "lbdoc1", "up"]);
    ip(&[
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        "198.18.250.2",
        "dev",
        "lbdoc0",
    ]);
}

/// Netinfo facts, and the gateway resolved through ARP (one datagram to 198.18.250.2).
fn netinfo_facts(ns: &str) {
    let (lbdoc0, gw) = in_netns(ns, || {
        block_on(async {
            let i = netinfo::interface("lbdoc0").await.expect("lbdoc0");
            let gw = netinfo::gateway_mac("lbdoc0").await.expect("gateway MAC");
            (i, gw)
        })
    });
    assert_eq!(lbdoc0.name, "lbdoc0");
    assert_eq!(lbdoc0.mac, LB_MAC);
    assert_eq!(lbdoc0.mtu, 1500);
    assert!(lbdoc0.up);
    assert!(
        lbdoc0
            .addrs
            .contains(&"198.18.250.1".parse::<IpAddr>().unwrap()),
        "{:?}",
        lbdoc0.addrs
    );
    assert_eq!(gw, (GW_MAC, "198.18.250.2".parse().unwrap()));
}

/// LB side: agent.mtu above the interface's fails; native XDP on veth works; rp_filter strict
/// is reported and fine.
fn lb_mtu_too_large(ns: &str) {
    let lb = in_netns(ns, || {
        write_sysctl("net/ipv4/conf/all/rp_filter", "0");
        write_sysctl("net/ipv4/conf/lbdoc0/rp_filter", "1");
        block_on(run(&DoctorOptions {
            iface: None,
            config: Some(config_for("lbdoc0", 9000, "")),
            backend: false,
        }))
    });
    let text = render(&lb);
    assert_eq!(get(&lb, "interface lbdoc0").verdict, Verdict::Ok, "{text}");
    let mtu = get(&lb, "MTU");
    assert_eq!(mtu.verdict, Verdict::Fail, "{text}");
    assert!(
        mtu.detail.contains("agent.mtu 9000 > lbdoc0 MTU 1500"),
        "{text}"
    );
    assert_eq!(
        get(&lb, "native XDP on lbdoc0").verdict,
        Verdict::Ok,
        "{text}"
    );
    let gateway = get(&lb, "gateway MAC");
    assert_eq!(gateway.verdict, Verdict::Ok, "{text}");
    assert!(
        gateway.detail.contains(&netinfo::format_mac(&GW_MAC)),
        "{text}"
    );
    let rp = get(&lb, "rp_filter");
    assert_eq!(rp.verdict, Verdict::Ok, "{text}");
    assert!(
        rp.detail.contains("all.rp_filter = 0, lbdoc0 = 1"),
        "{text}"
    );
    assert!(failed(&lb));
}

/// A fitting MTU warns about the clients' headroom and prints the numbers.
fn lb_headroom_and_fixed_gateway(ns: &str) {
    let lb = in_netns(ns, || {
        block_on(run(&DoctorOptions {
            iface: Some("lbdoc0".into()),
            config: Some(config_for(
                "elsewhere0",
                1500,
                "gateway_mac = \"02:00:00:00:00:09\"",
            )),
            backend: false,
        }))
    });
    let text = render(&lb);
    let mtu = get(&lb, "MTU");
    assert_eq!(mtu.verdict, Verdict::Warn, "{text}");
    assert!(mtu.detail.contains("1480"), "{text}");
    assert!(mtu.fix.as_deref().unwrap_or("").contains("1540"), "{text}");
    let gateway = get(&lb, "gateway MAC");
    assert_eq!(gateway.verdict, Verdict::Ok, "{text}");
    assert!(gateway.detail.contains("fixed"), "{text}");
    assert_no_fail_but_program_load(&lb);
}

/// lo has no native XDP: FAIL with xdp_mode = native.
fn lo_without_native_xdp(ns: &str) {
    let lo = in_netns(ns, || {
        block_on(run(&DoctorOptions {
            iface: Some("lo".into()),
            config: Some(config_for("lo", 1500, "xdp_mode = \"native\"")),
            backend: false,
        }))
    });
    let text = render(&lo);
    let native = get(&lo, "native XDP on lo");
    assert_eq!(native.verdict, Verdict::Fail, "{text}");
    assert!(native.detail.contains("no native XDP"), "{text}");
    assert!(
        get(&lo, "gateway MAC")
            .detail
            .contains("no default route via lo"),
        "{text}"
    );
}

fn backend_opts() -> DoctorOptions {
    DoctorOptions {
        iface: Some("lbdoc0".into()),
        config: Some(config_for("lbdoc0", 1500, "")),
        backend: true,
    }
}

/// Backend side, unprepared: VIP missing from lo, strict rp_filter, ARP answered, the service
/// bound to the backend's own address.
fn backend_unprepared(ns: &str) {
    let be = in_netns(ns, move || {
        write_sysctl("net/ipv4/conf/all/arp_ignore", "0");
        write_sysctl("net/ipv4/conf/all/arp_announce", "0");
        let _service = std::net::TcpListener::bind("198.18.250.1:80").expect("bind in netns");
        block_on(run(&backend_opts()))
    });
    let text = render(&be);
    let fix = |check: &str| get(&be, check).fix.clone().unwrap_or_default();
    assert_eq!(get(&be, "VIPs on lo").verdict, Verdict::Fail, "{text}");
    assert!(
        fix("VIPs on lo").contains("ip addr add 198.18.251.10/32 dev lo"),
        "{text}"
    );
    assert_ne!(get(&be, "rp_filter").verdict, Verdict::Ok, "{text}");
    assert!(
        fix("rp_filter").contains("net.ipv4.conf.all.rp_filter=2"),
        "{text}"
    );
    assert_eq!(get(&be, "ARP for VIPs").verdict, Verdict::Warn, "{text}");
    assert!(be.iter().all(|f| f.check != "gateway MAC"), "{text}");
    let service = get(&be, "service on the VIPs");
    assert_eq!(service.verdict, Verdict::Fail, "{text}");
    assert!(
        service
            .detail
            .contains("198.18.251.10:80 (listening only on 198.18.250.1)"),
        "{text}"
    );
}

/// Backend side, prepared: VIP on lo, loose rp_filter, ARP sysctls, xdp_decap attached.
fn backend_prepared(ns: &str) {
    ip(&["-n", ns, "addr", "add", "198.18.251.10/32", "dev", "lo"]);
    let be = in_netns(ns, move || {
        write_sysctl("net/ipv4/conf/all/rp_filter", "2");
        write_sysctl("net/ipv4/conf/all/arp_ignore", "1");
        write_sysctl("net/ipv4/conf/all/arp_announce", "2");
        let mut decap = Decap::load().expect("decap loads");
        let prog = decap.program(dataplane::DECAP_PROGRAM).expect("xdp_decap");
        let _id = prog
            .attach("lbdoc0", aya::programs::XdpMode::Driver)
            .expect("native XDP on veth");
        let _service = std::net::TcpListener::bind("0.0.0.0:80").expect("bind in netns");
        let findings = block_on(run(&backend_opts()));
        drop(decap);
        findings
    });
    let text = render(&be);
    for check in [
        "VIPs on lo",
        "rp_filter",
        "ARP for VIPs",
        "service on the VIPs",
        "decapsulation",
        "native XDP on lbdoc0",
        "MTU",
    ] {
        assert_eq!(get(&be, check).verdict, Verdict::Ok, "{check}:\n{text}");
    }
    assert!(
        get(&be, "decapsulation").detail.contains("xdp_decap"),
        "{text}"
    );
    assert_no_fail_but_program_load(&be);
}
