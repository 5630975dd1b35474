//! The Grafana dashboard (`dist/grafana/lb-agent.json`) and the Prometheus alert rules
//! (`dist/prometheus/lb-agent.rules.yml`) of issue 15, item 5.
//!
//! - Every metric name in the rules and the dashboard is one a running agent exports: the
//!   names (any identifier `lb_...` not preceded by an identifier character) are taken from
//!   every query of both files (`expr` of rules, panel targets and annotations; `query` and
//!   `definition` of template variables) and checked against the series names of a LIVE scrape
//!   (`GET /metrics`) of the real agent, started with a `[bgp]` section and its BIRD in a
//!   one-balancer fleet topology (`lb_tests::fleet`). A queried name counts if a series of that
//!   name is in the exposition, as Prometheus stores it: a counter as `NAME_total`, a
//!   histogram as `NAME_bucket`, `NAME_sum`, `NAME_count` (never the bare family name), a
//!   gauge as itself. Names in the other strings (titles, descriptions, summaries) must be a
//!   series or a family of the same scrape. Before the scrape the test brings up every metric
//!   that only some states have: a reload (`lb_reload_success`, `lb_reload_timestamp_seconds`),
//!   a runtime weight, which moves slots and so starts connection-table sweeps
//!   (`lb_backend_weight_override`, `lb_conn_table_live_entries` after the first sweep), the
//!   first health checks (`lb_health_check_latency_seconds`), the BGP session and its
//!   announcements (`lb_bgp_session_established`, `lb_bgp_announced`, `lb_maintenance`). It
//!   polls the scrape (at most 30 s) until all of them are there. So every name is checked
//!   live; none only against documentation. The same scrape must match the metric table of
//!   docs/operations.md ("Metrics") both ways, and contain every name of the table in
//!   lb-agent/src/admin/metrics.rs.
//! - `promtool check rules` accepts the rules and `promtool test rules` passes
//!   `tests/prometheus/lb-agent.rules.test.yml` (alerts that must fire, and drained, disabled
//!   and unchecked backends that must not), and every query of the dashboard parses as PromQL
//!   (checked by promtool as recording rules, Grafana's variables replaced); without promtool
//!   the test fails and says to run `cargo xtask setup`.
//! - The dashboard parses, every panel has the template data source and at least one target,
//!   filtered by `$instance`; every alert has `for`, a severity and annotations that point at
//!   existing sections of docs/operations.md.

use anyhow::{bail, ensure, Context, Result};
use lb_tests::{fleet::Fleet, scenario::Options, topo::backend_v4};
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

const DASHBOARD: &str = "dist/grafana/lb-agent.json";
const RULES: &str = "dist/prometheus/lb-agent.rules.yml";
const RULES_TESTS: &str = "tests/prometheus/lb-agent.rules.test.yml";
const OPERATIONS: &str = "docs/operations.md";
const METRICS_RS: &str = "lb-agent/src/admin/metrics.rs";

/// Alerts issue 15 asks for, by name.
const REQUIRED_ALERTS: &[&str] = &[
    "LbBackendDown",
    "LbVipNotServing",
    "LbReloadFailed",
    "LbFleetTableDigestDiverged",
    "LbConnTableNearlyFull",
    "LbBgpSessionDown",
];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(repo().join(path)).with_context(|| format!("reading {path}"))
}

fn dashboard() -> Result<Json> {
    serde_json::from_str(&read(DASHBOARD)?).with_context(|| format!("{DASHBOARD} is not JSON"))
}

fn rules() -> Result<Yaml> {
    serde_yaml::from_str(&read(RULES)?).with_context(|| format!("{RULES} is not YAML"))
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

/// Every metric name of this project in `text`: an identifier (PromQL's characters, less
/// trailing colons) that starts with `lb_` and is not the tail of a longer identifier.
fn metric_names(text: &str) -> BTreeSet<String> {
    let bytes = text.as_bytes();
    let mut names = BTreeSet::new();
    let mut from = 0;
    while let Some(offset) = text[from..].find("lb_") {
        let start = from + offset;
        let mut end = start;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !is_ident(bytes[start - 1]) {
            // A colon may be part of a name (recording rules), not its end: prose's "NAME: ...".
            names.insert(text[start..end].trim_end_matches(':').to_string());
        }
        from = end;
    }
    names
}

/// Metric names and where they are used (a path in the document).
type Uses = BTreeMap<String, BTreeSet<String>>;

/// The names a document uses: in queries (`expr`, and a template variable's `query` and
/// `definition`), and in prose (titles, descriptions, annotations), which may also name a
/// histogram by its family name.
#[derive(Debug, Default)]
struct Used {
    queries: Uses,
    prose: Uses,
}

impl Used {
    fn add(&mut self, key: &str, text: &str, at: &str) {
        let into = match key {
            "expr" | "query" | "definition" => &mut self.queries,
            _ => &mut self.prose,
        };
        for name in metric_names(text) {
            into.entry(name).or_default().insert(at.to_string());
        }
    }

    /// Every string of a JSON document (the dashboard), under the key `key`.
    fn json(&mut self, key: &str, value: &Json, at: &str) {
        match value {
            Json::String(s) => self.add(key, s, at),
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.json(key, item, &format!("{at}[{i}]"));
                }
            }
            Json::Object(map) => {
                // Panels are easier to find by title than by index.
                let here = match map.get("title").and_then(Json::as_str) {
                    Some(title) => format!("{at}({title:?})"),
                    None => at.to_string(),
                };
                for (k, item) in map {
                    self.json(k, item, &format!("{here}.{k}"));
                }
            }
            _ => {}
        }
    }

    /// As [`Used::json`], for YAML (the rules).
    fn yaml(&mut self, key: &str, value: &Yaml, at: &str) {
        match value {
            Yaml::String(s) => self.add(key, s, at),
            Yaml::Sequence(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.yaml(key, item, &format!("{at}[{i}]"));
                }
            }
            Yaml::Mapping(map) => {
                let here = match map.get("alert").and_then(Yaml::as_str) {
                    Some(alert) => format!("{at}({alert})"),
                    None => at.to_string(),
                };
                for (k, item) in map {
                    let k = k.as_str().unwrap_or("?");
                    self.yaml(k, item, &format!("{here}.{k}"));
                }
            }
            _ => {}
        }
    }

    /// Every metric name the dashboard and the rules use, with where.
    fn of_files() -> Result<Self> {
        let mut used = Self::default();
        used.json("", &dashboard()?, DASHBOARD);
        used.yaml("", &rules()?, RULES);
        Ok(used)
    }
}

/// One scrape: family name -> type (`# TYPE`), and the names of its series.
#[derive(Debug, Default)]
struct Exposition {
    families: BTreeMap<String, String>,
    series: BTreeSet<String>,
}

impl Exposition {
    fn parse(text: &str) -> Self {
        let mut e = Self::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut words = rest.split_whitespace();
                if let (Some(name), Some(kind)) = (words.next(), words.next()) {
                    e.families.insert(name.to_string(), kind.to_string());
                }
            } else if !line.starts_with('#') && !line.is_empty() {
                let end = line.find(['{', ' ']).unwrap_or(line.len());
                e.series.insert(line[..end].to_string());
            }
        }
        e
    }

    /// Whether a query for `name` finds series in this scrape.
    fn has_series(&self, name: &str) -> bool {
        self.series.contains(name)
    }

    /// The family `name` is a series of: itself, or the base of a counter's `_total` or a
    /// histogram's `_bucket`/`_sum`/`_count` (stripped only when the family has that type).
    fn family_of(&self, name: &str) -> Option<&str> {
        if self.families.contains_key(name) {
            return self.families.get_key_value(name).map(|(k, _)| k.as_str());
        }
        let suffixes: &[(&str, &[&str])] = &[
            ("_total", &["counter"]),
            ("_bucket", &["histogram"]),
            ("_sum", &["histogram", "summary"]),
            ("_count", &["histogram", "summary"]),
        ];
        suffixes.iter().find_map(|(suffix, kinds)| {
            let base = name.strip_suffix(suffix)?;
            let (key, kind) = self.families.get_key_value(base)?;
            kinds.contains(&kind.as_str()).then_some(key.as_str())
        })
    }

    /// What a query for `name` should say instead, if the family exists under other series
    /// names.
    fn hint(&self, name: &str) -> String {
        match self.families.get(name).map(String::as_str) {
            Some("counter") => format!(" (a counter: query {name}_total)"),
            Some("histogram") => {
                format!(" (a histogram: query {name}_bucket, {name}_sum or {name}_count)")
            }
            _ => String::new(),
        }
    }

    /// The names a documentation table may give this scrape's metrics: series names, and a
    /// histogram's family name.
    fn documented_names(&self) -> BTreeSet<String> {
        let histograms = self
            .families
            .iter()
            .filter(|(_, kind)| *kind == "histogram")
            .map(|(name, _)| name.clone());
        self.series
            .iter()
            .filter(|s| {
                // A histogram is documented by its family name, not its series.
                self.family_of(s)
                    .is_none_or(|f| self.families.get(f).is_none_or(|k| k != "histogram"))
            })
            .cloned()
            .chain(histograms)
            .collect()
    }
}

/// Names in the first column of a Markdown table (`| \`lb_name{labels}\` | ...`), in lines
/// that start with `prefix` (to read the table of a doc comment).
fn table_names(text: &str, prefix: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.trim_start().strip_prefix(prefix))
        .filter_map(|l| l.trim_start().strip_prefix("| `lb_"))
        .map(|rest| {
            let end = rest.find(['{', '`']).unwrap_or(rest.len());
            format!("lb_{}", &rest[..end])
        })
        .collect()
}

/// The names of docs/operations.md's metric table (under "### Metrics").
fn operations_metric_names() -> Result<BTreeSet<String>> {
    let doc = read(OPERATIONS)?;
    let start = doc.find("\n### Metrics\n").context("no Metrics section")?;
    let section = &doc[start + 1..];
    let end = section[4..].find("\n#").map_or(section.len(), |e| e + 4);
    Ok(table_names(&section[..end], ""))
}

/// The anchors of docs/operations.md's headings, as GitHub makes them.
fn operations_anchors() -> Result<BTreeSet<String>> {
    Ok(read(OPERATIONS)?
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| {
            l.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect())
}

#[test]
fn metric_names_are_found_in_promql() {
    let names = metric_names(
        r#"sum by (vip) (rate(lb_vip_packets_total{instance=~"$instance"}[5m])) / xlb_other
        + lb_conn_table_live_entries/lb_conn_table_capacity, "lb_a:b" lb_c: prose lb_"#,
    );
    let want: BTreeSet<String> = [
        "lb_vip_packets_total",
        "lb_conn_table_live_entries",
        "lb_conn_table_capacity",
        "lb_a:b",
        "lb_c",
        "lb_",
    ]
    .map(String::from)
    .into();
    assert_eq!(names, want);
    let e = Exposition::parse(
        "# TYPE lb_x counter\nlb_x_total 1\n# TYPE lb_h histogram\nlb_h_bucket{le=\"1\"} 0\n\
         lb_h_sum 0\nlb_h_count 0\n# TYPE lb_g gauge\nlb_g 1\n# EOF\n",
    );
    assert!(e.has_series("lb_x_total") && !e.has_series("lb_x"));
    assert!(e.has_series("lb_h_bucket") && !e.has_series("lb_h"));
    assert_eq!(e.family_of("lb_h_count"), Some("lb_h"));
    assert_eq!(e.family_of("lb_g_total"), None);
    assert_eq!(e.family_of("lb_x_total"), Some("lb_x"));
    let documented: BTreeSet<String> = ["lb_x_total", "lb_h", "lb_g"].map(String::from).into();
    assert_eq!(e.documented_names(), documented);
}

#[test]
fn dashboard_is_well_formed() -> Result<()> {
    let d = dashboard()?;
    let want_ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    let vars: BTreeMap<&str, &Json> = d["templating"]["list"]
        .as_array()
        .context("templating.list")?
        .iter()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    ensure!(
        vars.get("datasource")
            .is_some_and(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no `datasource` template variable of type datasource (prometheus): {vars:?}"
    );
    for name in ["instance", "vip"] {
        let v = vars
            .get(name)
            .with_context(|| format!("no ${name} variable"))?;
        ensure!(
            v["type"] == "query" && v["datasource"] == want_ds,
            "${name}: {v}"
        );
    }

    // Panels, including any nested in collapsed rows.
    let mut panels = Vec::new();
    let mut stack: Vec<&Json> = d["panels"].as_array().context("panels")?.iter().collect();
    while let Some(p) = stack.pop() {
        if let Some(nested) = p["panels"].as_array() {
            stack.extend(nested);
        }
        panels.push(p);
    }
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for p in &panels {
        let title = p["title"].as_str().unwrap_or("?");
        ensure!(
            ids.insert(p["id"].as_u64().context("panel id")?),
            "{title}: duplicate id"
        );
        let g = &p["gridPos"];
        let (x, w, h) = (g["x"].as_u64(), g["w"].as_u64(), g["h"].as_u64());
        ensure!(
            matches!((x, w, h), (Some(x), Some(w), Some(h)) if w > 0 && h > 0 && x + w <= 24),
            "{title}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue; // layout only: no query
        }
        ensure!(
            p["datasource"] == want_ds,
            "{title}: datasource {}",
            p["datasource"]
        );
        let targets = p["targets"].as_array().context("targets")?;
        ensure!(!targets.is_empty(), "{title}: no target");
        for t in targets {
            let expr = t["expr"].as_str().unwrap_or_default();
            ensure!(!expr.trim().is_empty(), "{title}: target without expr: {t}");
            ensure!(t["datasource"] == want_ds, "{title}: target datasource {t}");
            ensure!(t["refId"].is_string(), "{title}: target without refId: {t}");
            ensure!(
                expr.contains("instance=~\"$instance\""),
                "{title}: not filtered by $instance: {expr}"
            );
            queries += 1;
        }
    }
    println!("{DASHBOARD}: {} panels, {queries} queries", panels.len());
    Ok(())
}

#[test]
fn rules_are_well_formed() -> Result<()> {
    let r = rules()?;
    let anchors = operations_anchors()?;
    let mut alerts = BTreeSet::new();
    for group in r["groups"].as_sequence().context("groups")? {
        for rule in group["rules"].as_sequence().context("rules")? {
            let name = rule["alert"].as_str().context("a rule without `alert`")?;
            ensure!(alerts.insert(name.to_string()), "{name} twice");
            ensure!(
                rule["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "{name}: no expr"
            );
            ensure!(rule["for"].as_str().is_some(), "{name}: no `for`");
            ensure!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning" | "info")
                ),
                "{name}: severity {:?}",
                rule["labels"]["severity"]
            );
            let summary = rule["annotations"]["summary"].as_str();
            ensure!(summary.is_some_and(|s| !s.is_empty()), "{name}: no summary");
            let description = rule["annotations"]["description"]
                .as_str()
                .with_context(|| format!("{name}: no description"))?;
            let links: Vec<&str> = description
                .split("docs/operations.md#")
                .skip(1)
                .map(|rest| {
                    let end = rest
                        .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
                        .unwrap_or(rest.len());
                    &rest[..end]
                })
                .collect();
            ensure!(
                !links.is_empty(),
                "{name}: the description points at no section of docs/operations.md"
            );
            for link in links {
                ensure!(
                    anchors.contains(link),
                    "{name}: docs/operations.md has no section #{link}"
                );
            }
        }
    }
    for name in REQUIRED_ALERTS {
        ensure!(alerts.contains(*name), "no alert {name}: {alerts:?}");
    }
    println!("{RULES}: {} alerts: {alerts:?}", alerts.len());
    Ok(())
}

/// `promtool ARGS` in the repository: its output, or an error with it.
fn promtool(args: &[&str]) -> Result<String> {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(repo())
        .output()
    {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "promtool is not installed: run `cargo xtask setup` (as root), which installs \
             Debian's `prometheus` package for it"
        ),
        r => r.context("running promtool")?,
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    Ok(text)
}

#[test]
fn promtool_accepts_and_tests_the_rules() -> Result<()> {
    let version = promtool(&["--version"])?;
    println!("{}", version.lines().next().unwrap_or_default());
    let check = promtool(&["check", "rules", RULES])?;
    println!("$ promtool check rules {RULES}\n{check}");
    let test = promtool(&["test", "rules", RULES_TESTS])?;
    println!("$ promtool test rules {RULES_TESTS}\n{test}");

    // The dashboard's queries parse as PromQL: each as a recording rule of a file promtool
    // checks, with Grafana's variables replaced by values they could have.
    let queries = dashboard_queries(&dashboard()?);
    ensure!(queries.len() > 20, "only {} queries found", queries.len());
    let rules: Vec<Yaml> = queries
        .iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let mut rule = serde_yaml::Mapping::new();
            rule.insert("record".into(), format!("lb_dashboard_query_{i}").into());
            rule.insert("expr".into(), expr.clone().into());
            Yaml::Mapping(rule)
        })
        .collect();
    let mut group = serde_yaml::Mapping::new();
    group.insert("name".into(), "dashboard".into());
    group.insert("rules".into(), Yaml::Sequence(rules));
    let mut file = serde_yaml::Mapping::new();
    file.insert("groups".into(), Yaml::Sequence(vec![Yaml::Mapping(group)]));
    let path =
        std::env::temp_dir().join(format!("lb-dashboard-queries-{}.yml", std::process::id()));
    std::fs::write(&path, serde_yaml::to_string(&file)?)?;
    let checked = promtool(&["check", "rules", &path.to_string_lossy()]);
    let _ = std::fs::remove_file(&path);
    let checked = checked.with_context(|| {
        let numbered: Vec<String> = queries
            .iter()
            .enumerate()
            .map(|(i, (at, expr))| format!("  lb_dashboard_query_{i}: {at}: {expr}"))
            .collect();
        format!(
            "a query of {DASHBOARD} is not PromQL:\n{}",
            numbered.join("\n")
        )
    })?;
    println!(
        "{DASHBOARD}: {} queries parse as PromQL ({})",
        queries.len(),
        checked.trim()
    );
    Ok(())
}

/// The dashboard's PromQL: every `expr` (panel targets, annotations) and the selector of each
/// template variable's `label_values(SELECTOR, LABEL)`, with Grafana's variables replaced.
fn dashboard_queries(d: &Json) -> Vec<(String, String)> {
    fn walk(value: &Json, at: &str, out: &mut Vec<(String, String)>) {
        match value {
            Json::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    walk(item, &format!("{at}[{i}]"), out);
                }
            }
            Json::Object(map) => {
                let here = match map.get("title").or(map.get("name")).and_then(Json::as_str) {
                    Some(title) => format!("{at}({title:?})"),
                    None => at.to_string(),
                };
                if let Some(expr) = map.get("expr").and_then(Json::as_str) {
                    out.push((here.clone(), expr.to_string()));
                }
                if let Some(query) = map.get("definition").and_then(Json::as_str) {
                    if let Some(args) = query
                        .strip_prefix("label_values(")
                        .and_then(|a| a.strip_suffix(')'))
                    {
                        let selector = args.rsplit_once(',').map_or(args, |(s, _)| s);
                        out.push((here.clone(), selector.trim().to_string()));
                    }
                }
                for (key, item) in map {
                    walk(item, &format!("{here}.{key}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(d, "", &mut out);
    for (_, expr) in &mut out {
        *expr = expr
            .replace("$__rate_interval", "1m")
            .replace("$instance", ".*")
            .replace("$vip", ".*");
    }
    out
}

fn list(places: &BTreeSet<String>) -> String {
    places.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// Waits (at most 30 s) until a scrape of balancer 0 has every name in `want`; that scrape.
fn scrape_with(f: &Fleet, want: &BTreeSet<String>) -> Result<(String, Exposition)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let text = f.agent(0)?.metrics()?;
        let e = Exposition::parse(&text);
        let missing: Vec<&String> = want.iter().filter(|n| !e.has_series(n)).collect();
        if missing.is_empty() {
            return Ok((text, e));
        }
        if Instant::now() > deadline {
            let hints: Vec<String> = missing
                .iter()
                .map(|n| format!("{n}{}", e.hint(n)))
                .collect();
            bail!(
                "after 30 s the live agent still exports no series named {hints:?}; its \
                 families: {:?}",
                e.families
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dashboard_and_rules_use_only_metrics_a_live_agent_exports() -> Result<()> {
    let used = Used::of_files()?;
    let documented = operations_metric_names()?;
    let in_source = table_names(&read(METRICS_RS)?, "///");
    ensure!(
        !used.queries.is_empty() && !documented.is_empty() && !in_source.is_empty(),
        "no query or no metric table found"
    );

    // One balancer with a [bgp] section and its BIRD, behind the router's BIRD: Fleet::start
    // returns once the router routes the VIPs through it (its session is established).
    let f = Fleet::start("mo", 1, Options::default())?;
    let agent = f.agent(0)?;
    let reload = agent.post("/reload")?;
    ensure!(reload.contains("reloaded"), "{reload}");
    // A runtime weight moves slots: the connection-table sweeps begin.
    let weight = agent.post(&format!("/vips/web/backends/{}/weight/300", backend_v4(0)))?;
    println!("POST weight: {weight}");

    // Every name the queries use, and every documented one that names series (a histogram's
    // family name does not: its series are `_bucket`, `_sum`, `_count`).
    let mut want: BTreeSet<String> = used.queries.keys().cloned().collect();
    want.extend(
        documented
            .iter()
            .chain(&in_source)
            .filter(|n| *n != "lb_health_check_schedule_lag_seconds")
            .cloned(),
    );
    let (text, e) = match scrape_with(&f, &want) {
        Ok(scrape) => scrape,
        Err(err) => {
            // Where the files use what is missing, before the scrape's own account.
            let text = f.agent(0)?.metrics()?;
            let e = Exposition::parse(&text);
            let unknown: Vec<String> = used
                .queries
                .iter()
                .filter(|(n, _)| !e.has_series(n))
                .map(|(n, at)| format!("  {n}{} used at {}", e.hint(n), list(at)))
                .collect();
            bail!(
                "{err:#}\nqueried names without series:\n{}\n{text}",
                unknown.join("\n")
            );
        }
    };
    for (name, at) in &used.queries {
        let family = e.family_of(name).unwrap_or("?");
        println!(
            "live: {name} (family {family}, {}) in {} queries",
            e.families.get(family).map_or("?", String::as_str),
            at.len()
        );
    }
    // Prose may name a family (a histogram) as well as a series.
    let unknown: Vec<String> = used
        .prose
        .iter()
        .filter(|(n, _)| !e.has_series(n) && e.family_of(n).is_none())
        .map(|(n, at)| format!("  {n} in {}", list(at)))
        .collect();
    ensure!(
        unknown.is_empty(),
        "titles and descriptions name metrics the agent does not export:\n{}",
        unknown.join("\n")
    );

    // The operations guide's table and the scrape list the same metrics.
    let exported = e.documented_names();
    let undocumented: Vec<&String> = exported.difference(&documented).collect();
    let gone: Vec<&String> = documented.difference(&exported).collect();
    ensure!(
        undocumented.is_empty() && gone.is_empty(),
        "{OPERATIONS} Metrics table: missing {undocumented:?}, not exported {gone:?}\n{text}"
    );
    let gone: Vec<&String> = in_source.difference(&exported).collect();
    ensure!(
        gone.is_empty(),
        "{METRICS_RS} documents {gone:?}, which the agent does not export"
    );

    // Not a failure: families that no query shows.
    let shown: BTreeSet<&str> = used.queries.keys().filter_map(|n| e.family_of(n)).collect();
    let unshown: Vec<&String> = e
        .families
        .keys()
        .filter(|f| !shown.contains(f.as_str()))
        .collect();
    println!("families no query shows: {unshown:?}");
    Ok(())
}
