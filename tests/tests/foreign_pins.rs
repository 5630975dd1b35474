//! Pins of another network namespace are never adopted (issue 12, item 4). bpffs is shared by
//! every namespace of the host, so a second namespace with an interface of the same name and
//! the same pin directory would otherwise take over the first one's XDP link and maps: its
//! program swapped into the first namespace's interface (decap), or its configuration written
//! into the first balancer's maps. Both must be refused with an error naming the pin path to
//! use instead, and leave the first namespace forwarding exactly as before.

use anyhow::{ensure, Context, Result};
use aya::maps::{Array, HashMap, Map, MapData};
use lb_agent::dataplane::pinned::{link_state, LinkState};
use lb_common::{Backend, LbConfig, VipKey, VipMeta};
use lb_tests::{
    agentproc::Agent,
    client::http_burst,
    netns::NsRuntime,
    pins::{decap_attach, run_to_end, word_after, PinDir},
    scenario::{balancer_config, Options, Scenario},
    servers::Backends,
    topo::{self, Topology, LB_IFACE},
};
use std::{net::SocketAddr, path::Path, sync::Mutex, time::Duration};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

/// 300 requests to the web VIP: every one answered, by every backend.
fn all_backends_serve(client: &NsRuntime, web: SocketAddr, backends: usize) -> Result<()> {
    let tally = client.run(http_burst(web, 300, 8))?;
    ensure!(
        tally.errors.is_empty() && tally.total() == 300 && tally.by_backend.len() == backends,
        "traffic: {:?} ({tally:?})",
        &tally.errors[..tally.errors.len().min(5)]
    );
    Ok(())
}

#[test]
fn decap_attach_in_another_namespace_is_refused_and_changes_nothing() -> Result<()> {
    let _serial = serial();
    let mut sc = Scenario::start("na", Options::default())?;
    let pins = PinDir::new(&sc.topo.prefix, "decap");
    // Backend 0 decapsulates through `decap attach` (pinned) instead of the harness.
    sc.topo.release_decap(0);
    let (ok, out) = decap_attach(&sc.topo.backends[0], "b0", &pins.0)?;
    ensure!(ok, "decap attach in backend 0: {out}");
    all_backends_serve(&sc.client, sc.web(), 3)?;
    let link = pins.0.join("b0_link");
    let before = link_state(&link)?;

    // Backend 1 has its own b0 (still running the harness's decap): same name, same pin dir.
    let (ok, out) = decap_attach(&sc.topo.backends[1], "b0", &pins.0)?;
    ensure!(!ok, "decap attach in a second namespace succeeded: {out}");
    eprintln!("refused decap attach:\n{out}");
    let dir = pins.0.display().to_string();
    ensure!(
        out.contains("another network namespace")
            && out.contains(&format!("--pin-dir {dir}-ns"))
            && !out.contains("decap attached"),
        "the error does not say whose pins these are and what to use instead: {out}"
    );
    ensure!(
        link_state(&link)? == before,
        "backend 0's pinned link changed"
    );
    // Backend 0 still decapsulates with its own addresses: it keeps serving its share.
    all_backends_serve(&sc.client, sc.web(), 3)?;

    // The suggested directory works.
    let suggested = word_after(&out, "--pin-dir ").context("no suggested --pin-dir")?;
    let suggested_guard = PinDir::at(suggested.into());
    sc.topo.release_decap(1);
    let (ok, out) = decap_attach(&sc.topo.backends[1], "b0", &suggested_guard.0)?;
    ensure!(ok, "decap attach with the suggested pin dir: {out}");
    all_backends_serve(&sc.client, sc.web(), 3)?;
    ensure!(link_state(&link)? == before);
    sc.agent.stop()?;
    Ok(())
}

/// What a second agent could change: CONFIG (gateway MAC, encap source), VIPS, BACKENDS and the
/// pinned link.
#[derive(Debug, PartialEq)]
struct Pins {
    config: LbConfig,
    vips: Vec<(VipKey, VipMeta)>,
    backends: Vec<Backend>,
    link: LinkState,
}

fn read_pins(dir: &Path) -> Result<Pins> {
    let open = |name: &str| {
        MapData::from_pin(dir.join(name)).with_context(|| format!("opening pinned map {name}"))
    };
    let config: Array<MapData, LbConfig> = Array::try_from(Map::Array(open("CONFIG")?))?;
    let vips: HashMap<MapData, VipKey, VipMeta> = HashMap::try_from(Map::HashMap(open("VIPS")?))?;
    let mut vips = vips.iter().collect::<Result<Vec<_>, _>>()?;
    vips.sort_by_key(|(k, _)| (k.addr, k.port, k.proto, k.family));
    let backends: Array<MapData, Backend> = Array::try_from(Map::Array(open("BACKENDS")?))?;
    Ok(Pins {
        config: config.get(&0, 0)?,
        vips,
        backends: backends.iter().collect::<Result<Vec<_>, _>>()?,
        link: link_state(&lb_agent::dataplane::link_pin(dir, LB_IFACE))?,
    })
}

#[test]
fn agent_in_another_namespace_refuses_the_pin_path_and_the_first_keeps_forwarding() -> Result<()> {
    let _serial = serial();
    let topo = Topology::build_with(
        "nb",
        topo::Options {
            backends: 3,
            balancers: 2,
            static_vip_routes: true,
        },
    )?;
    let _servers = Backends::start(&topo.backends)?;
    let dir = std::env::temp_dir().join(&topo.prefix);
    std::fs::create_dir_all(&dir)?;
    let o = Options::default();
    let first = dir.join("lb0.toml");
    std::fs::write(&first, balancer_config(&topo, 0, &o, &o.weights))?;
    let mut agent = Agent::start_in(&topo.lb, &first, Duration::from_secs(20))?;
    let client = NsRuntime::new(&topo.client)?;
    let web = SocketAddr::from((topo::VIP_V4, lb_tests::servers::HTTP_PORT));
    all_backends_serve(&client, web, 3)?;
    // Stopped, the first balancer keeps forwarding from its pins (a running one would be
    // refused by the pin-path lock before anything else).
    agent.stop()?;
    all_backends_serve(&client, web, 3)?;
    let pins = topo.pin_dir_of(0);
    let before = read_pins(&pins)?;

    // The second balancer's configuration with the first one's pin path.
    let own = topo.pin_dir_of(1).display().to_string();
    let second = dir.join("lb1.toml");
    let text = balancer_config(&topo, 1, &o, &o.weights);
    std::fs::write(&second, text.replace(&own, &pins.display().to_string()))?;
    let (code, out) = run_to_end(&topo.lbs[1], &second)?;
    ensure!(
        code.is_some_and(|c| c != 0),
        "second agent exited {code:?}:\n{out}"
    );
    eprintln!("refused agent:\n{out}");
    ensure!(
        out.contains("another network namespace")
            && out.contains(&format!("agent.pin_path = \"{}-ns", pins.display()))
            && !out.contains("balancer attached"),
        "the error does not say whose pins these are and what to use instead:\n{out}"
    );
    let after = read_pins(&pins)?;
    ensure!(
        before == after,
        "changed:\nbefore {before:#?}\nafter {after:#?}"
    );
    all_backends_serve(&client, web, 3)?;

    // The suggested pin path works for the second balancer.
    let suggested = word_after(&out, "agent.pin_path = ").context("no suggested pin path")?;
    let _suggested = PinDir::at(suggested.clone().into());
    std::fs::write(&second, text.replace(&own, &suggested))?;
    let mut other = Agent::start_in(&topo.lbs[1], &second, Duration::from_secs(20))?;
    let status = other.status()?;
    ensure!(status.xdp_mode == "native", "{}", status.xdp_mode);
    other.stop()?;
    ensure!(read_pins(&pins)? == before);
    all_backends_serve(&client, web, 3)?;
    Ok(())
}
