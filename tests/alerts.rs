//! The alert rules (`config/prometheus/`) and the Grafana dashboard (`config/grafana/`),
//! issue 12: a real `promtool` (Debian's, 3.5, in `.tools/bin`) checks the rules and runs
//! their unit tests, in which every alert fires on synthetic series and stays silent on
//! healthy ones; the Prometheus Operator's copy of the rules is the same; the dashboard's
//! queries are PromQL that promtool accepts; and a real daemon, against a real etcd,
//! backing up, verifying, drilling and recording the change log, exports every
//! `lifeboat_*` metric (and label value) that a rule or a panel names.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use yaml_rust2::{Yaml, YamlEmitter, YamlLoader};

use crate::support;
use support::daemon::Daemon;
use support::etcd::Cluster;
use support::tools::{self, EtcdVersion};

/// Metrics the rules read that other exporters provide, and which.
const FOREIGN: &[(&str, &str)] = &[
    ("up", "Prometheus itself, per scrape target"),
    ("kube_deployment_spec_replicas", "kube-state-metrics"),
    (
        "kube_cronjob_status_last_successful_time",
        "kube-state-metrics",
    ),
    ("kube_job_failed", "kube-state-metrics"),
    ("kube_job_created", "kube-state-metrics"),
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn prometheus_dir() -> PathBuf {
    repo().join("config/prometheus")
}

fn load_yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    YamlLoader::load_from_str(&text)
        .unwrap_or_else(|e| panic!("{}: not YAML: {e}", path.display()))
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("{}: empty", path.display()))
}

fn rules_file() -> Yaml {
    load_yaml(&prometheus_dir().join("lifeboat-rules.yaml"))
}

/// (alert, expr) of every rule of a `groups:` document.
fn alerts(doc: &Yaml) -> Vec<(String, String)> {
    let groups = doc["groups"].as_vec().expect("groups");
    let mut out = Vec::new();
    for g in groups {
        for r in g["rules"].as_vec().expect("rules") {
            let alert = r["alert"].as_str().expect("every rule is an alert");
            let expr = r["expr"].as_str().expect("expr");
            out.push((alert.to_owned(), expr.to_owned()));
        }
    }
    out
}

/// Runs promtool in `dir`; (success, stdout and stderr).
fn promtool(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(tools::promtool())
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn emit(doc: &Yaml) -> String {
    let mut text = String::new();
    YamlEmitter::new(&mut text).dump(doc).expect("emit YAML");
    text
}

#[test]
fn promtool_accepts_the_rules_file_and_the_prometheusrule_and_refuses_a_broken_one() {
    let dir = prometheus_dir();
    let count = alerts(&rules_file()).len();
    let (ok, out) = promtool(&dir, &["check", "rules", "lifeboat-rules.yaml"]);
    assert!(ok, "promtool check rules lifeboat-rules.yaml:\n{out}");
    assert!(
        out.contains(&format!("SUCCESS: {count} rules found")),
        "promtool counted other rules than the {count} alerts: {out}"
    );

    // The Prometheus Operator's object, as a rule file of its own.
    let scratch = tempfile::tempdir().expect("temp dir");
    let object = load_yaml(&repo().join("config/kubernetes/base/prometheusrule.yaml"));
    let mut groups = yaml_rust2::yaml::Hash::new();
    groups.insert(
        Yaml::String("groups".into()),
        object["spec"]["groups"].clone(),
    );
    std::fs::write(
        scratch.path().join("operator.yaml"),
        emit(&Yaml::Hash(groups)),
    )
    .expect("write");
    let (ok, out) = promtool(scratch.path(), &["check", "rules", "operator.yaml"]);
    assert!(ok, "the PrometheusRule's groups:\n{out}");

    // The check is real: one expression broken, and promtool says where.
    let text = std::fs::read_to_string(dir.join("lifeboat-rules.yaml")).expect("read");
    let broken = text.replacen("lifeboat_leader == 1", "lifeboat_leader == ", 1);
    assert_ne!(broken, text);
    std::fs::write(scratch.path().join("broken.yaml"), broken).expect("write");
    let (ok, out) = promtool(scratch.path(), &["check", "rules", "broken.yaml"]);
    assert!(!ok, "promtool accepted a broken expression:\n{out}");
    assert!(
        out.contains("LifeboatBackupFailing") || out.contains("parse error"),
        "{out}"
    );
}

#[test]
fn the_prometheusrule_in_the_kustomize_base_has_the_rules_files_groups() {
    let object = load_yaml(&repo().join("config/kubernetes/base/prometheusrule.yaml"));
    assert_eq!(
        object["apiVersion"].as_str(),
        Some("monitoring.coreos.com/v1")
    );
    assert_eq!(object["kind"].as_str(), Some("PrometheusRule"));
    let file = rules_file();
    if object["spec"]["groups"] != file["groups"] {
        let a = alerts(&file);
        let b = alerts(&object["spec"]);
        let differ: Vec<&String> = a
            .iter()
            .filter(|r| !b.contains(r))
            .chain(b.iter().filter(|r| !a.contains(r)))
            .map(|(n, _)| n)
            .collect();
        panic!(
            "config/kubernetes/base/prometheusrule.yaml differs from \
             config/prometheus/lifeboat-rules.yaml (copy the groups over); alerts that \
             differ: {differ:?} (or their labels, annotations, `for` or order)"
        );
    }
}

#[test]
fn unit_tests_fire_every_alert_and_keep_each_silent_on_healthy_series() {
    let dir = prometheus_dir();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("config/prometheus")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".test.yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.test.yaml in config/prometheus");
    let names: BTreeSet<String> = alerts(&rules_file()).into_iter().map(|(n, _)| n).collect();
    let mut fired = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for f in &files {
        let doc = load_yaml(&dir.join(f));
        assert_eq!(
            doc["rule_files"]
                .as_vec()
                .map(|v| v.iter().filter_map(Yaml::as_str).collect::<Vec<_>>()),
            Some(vec!["lifeboat-rules.yaml"]),
            "{f}: rule_files"
        );
        for t in doc["tests"].as_vec().expect("tests") {
            for a in t["alert_rule_test"].as_vec().into_iter().flatten() {
                let alert = a["alertname"].as_str().expect("alertname").to_owned();
                // promtool passes a test of an alert that does not exist with no
                // alerts expected: a renamed alert would keep "passing".
                assert!(
                    names.contains(&alert),
                    "{f}: tests {alert}, which no rule defines"
                );
                let expected = a["exp_alerts"].as_vec().map_or(0, Vec::len);
                if expected == 0 {
                    silent.insert(alert);
                } else {
                    fired.insert(alert);
                }
            }
        }
    }
    let never_fired: Vec<&String> = names.difference(&fired).collect();
    let never_silent: Vec<&String> = names.difference(&silent).collect();
    assert!(
        never_fired.is_empty(),
        "alerts no unit test fires: {never_fired:?}"
    );
    assert!(
        never_silent.is_empty(),
        "alerts no unit test shows silent: {never_silent:?}"
    );

    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let t0 = Instant::now();
    let (ok, out) = promtool(&dir, &args);
    assert!(ok, "promtool test rules {files:?}:\n{out}");
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "promtool did not pass every file:\n{out}"
    );
    eprintln!("promtool test rules: {:.1} s", t0.elapsed().as_secs_f64());
}

// ---------------------------------------------------------------------------------------
// The dashboard

fn dashboard() -> serde_json::Value {
    let path = repo().join("config/grafana/lifeboat-dashboard.json");
    let text = std::fs::read_to_string(&path).expect("config/grafana/lifeboat-dashboard.json");
    serde_json::from_str(&text).expect("the dashboard is JSON")
}

/// Every panel (rows' nested ones too) of a dashboard.
fn panels(dash: &serde_json::Value) -> Vec<&serde_json::Value> {
    let mut out = Vec::new();
    let mut pending: Vec<&serde_json::Value> =
        dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = pending.pop() {
        if let Some(nested) = p["panels"].as_array() {
            pending.extend(nested);
        }
        out.push(p);
    }
    out
}

/// The PromQL of every panel query and template variable, Grafana's variables replaced
/// by values a query at run time would have.
fn dashboard_queries() -> Vec<(String, String)> {
    let dash = dashboard();
    let mut out = Vec::new();
    for p in panels(&dash) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("every target has expr");
            let title = p["title"].as_str().unwrap_or("?");
            out.push((format!("panel {title:?}"), grafana_to_promql(expr)));
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        // label_values(SELECTOR, LABEL): the selector is PromQL.
        if let Some(q) = v["query"]["query"].as_str() {
            let inner = q
                .strip_prefix("label_values(")
                .and_then(|q| q.rsplit_once(','))
                .map(|(sel, _)| sel)
                .unwrap_or_else(|| {
                    panic!("variable query {q:?} is not label_values(SELECTOR, LABEL)")
                });
            out.push((
                format!("variable {:?}", v["name"].as_str().unwrap_or("?")),
                grafana_to_promql(inner),
            ));
        }
    }
    out
}

fn grafana_to_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("${job}", "lifeboat")
        .replace("$job", "lifeboat")
        .replace("${instance}", ".+")
        .replace("$instance", ".+")
}

#[test]
fn the_dashboards_queries_are_promql_that_promtool_accepts() {
    let dash = dashboard();
    assert!(dash["uid"].as_str().is_some_and(|u| !u.is_empty()));
    let mut ids = BTreeSet::new();
    for p in panels(&dash) {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_i64().expect("id")),
            "panel id twice: {title}"
        );
        let grid = &p["gridPos"];
        let (x, w) = (
            grid["x"].as_i64().expect("x"),
            grid["w"].as_i64().expect("w"),
        );
        assert!(x >= 0 && w > 0 && x + w <= 24, "{title}: gridPos {grid}");
        if p["type"] != "row" {
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{title}: datasource"
            );
            assert!(
                !p["targets"].as_array().is_none_or(Vec::is_empty),
                "{title}: no query"
            );
        }
    }
    let queries = dashboard_queries();
    // promtool parses PromQL in rule files: each query as a recording rule.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, q)) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(q).expect("quote");
        rules.push_str(&format!(
            "      - record: dashboard:query_{i}\n        expr: {quoted}\n"
        ));
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    std::fs::write(scratch.path().join("dashboard.yaml"), &rules).expect("write");
    let (ok, out) = promtool(scratch.path(), &["check", "rules", "dashboard.yaml"]);
    assert!(ok, "a dashboard query is not PromQL:\n{out}\n{rules}");
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", queries.len())),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// Which metrics they name

/// One instant-vector selector of a PromQL expression: the metric name and its label
/// matchers (label, operator, value).
#[derive(Debug, PartialEq)]
struct Selector {
    metric: String,
    matchers: Vec<(String, String, String)>,
}

/// The named selectors of a PromQL expression. A small tokenizer, enough for the
/// expressions shipped here: strings, `[ranges]` and `$variables` are skipped, a name
/// followed by `(` is a function (an aggregation may have its `by (...)` first), the
/// label lists after `by`, `without`,
/// `on`, `ignoring`, `group_left` and `group_right` are not metrics.
fn selectors(expr: &str) -> Vec<Selector> {
    const KEYWORDS: &[&str] = &[
        "and", "or", "unless", "offset", "bool", "inf", "nan", "atan2",
    ];
    // Aggregations may put their `by (...)` before the parenthesis.
    const AGGREGATIONS: &[&str] = &[
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
        "limitk",
        "limit_ratio",
    ];
    const LABEL_LISTS: &[&str] = &[
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
    ];
    let b: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let skip_ws = |mut i: usize| {
        while i < b.len() && b[i].is_whitespace() {
            i += 1;
        }
        i
    };
    // Index just past the closing `close` of the group opened at `i`.
    let skip_group = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while i < b.len() {
            if b[i] == '"' || b[i] == '\'' {
                i = skip_string(&b, i);
                continue;
            }
            if b[i] == open {
                depth += 1;
            } else if b[i] == close {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            i += 1;
        }
        i
    };
    while i < b.len() {
        let c = b[i];
        if c == '"' || c == '\'' || c == '`' {
            i = skip_string(&b, i);
        } else if c == '[' {
            i = skip_group(i, '[', ']');
        } else if c == '{' {
            i = skip_group(i, '{', '}');
        } else if c == '$' {
            i += 1;
            if i < b.len() && b[i] == '{' {
                i = skip_group(i, '{', '}');
            } else {
                while i < b.len() && (b[i].is_alphanumeric() || b[i] == '_') {
                    i += 1;
                }
            }
        } else if c.is_ascii_digit() || c == '.' {
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '.') {
                i += 1;
            }
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == '_' || b[i] == ':') {
                i += 1;
            }
            let word: String = b[start..i].iter().collect();
            let next = skip_ws(i);
            let after = b.get(next).copied();
            if LABEL_LISTS.contains(&word.as_str()) {
                if after == Some('(') {
                    i = skip_group(next, '(', ')');
                }
            } else if KEYWORDS.contains(&word.as_str())
                || AGGREGATIONS.contains(&word.as_str())
                || after == Some('(')
            {
                // an operator, or a function or aggregation: its arguments follow
            } else {
                let mut matchers = Vec::new();
                if after == Some('{') {
                    let end = skip_group(next, '{', '}');
                    let inner: String = b[next + 1..end - 1].iter().collect();
                    matchers = parse_matchers(&inner);
                    i = end;
                }
                out.push(Selector {
                    metric: word,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Index just past the string literal starting at `i`.
fn skip_string(b: &[char], i: usize) -> usize {
    let quote = b[i];
    let mut j = i + 1;
    while j < b.len() && b[j] != quote {
        if b[j] == '\\' && quote != '`' {
            j += 1;
        }
        j += 1;
    }
    j + 1
}

/// `a="x", b=~"y"` -> [(a, =, x), (b, =~, y)].
fn parse_matchers(inner: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let name_end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        let label = rest[..name_end].to_owned();
        rest = rest[name_end..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .unwrap_or_else(|| panic!("matcher without operator in {{{inner}}}"));
        rest = rest[op.len()..].trim_start();
        let quote = rest.chars().next().expect("a quoted value");
        let chars: Vec<char> = rest.chars().collect();
        let end = skip_string(&chars, 0);
        let value: String = chars[1..end - 1].iter().collect();
        out.push((label, op.to_owned(), value));
        let consumed: usize = chars[..end].iter().map(|c| c.len_utf8()).sum();
        assert!(quote == '"' || quote == '\'', "{{{inner}}}");
        rest = rest[consumed..]
            .trim_start()
            .trim_start_matches(',')
            .trim_start();
    }
    out
}

#[test]
fn the_promql_tokenizer_finds_metrics_and_only_metrics() {
    let found = selectors(
        "sum by (job, instance) (increase(a_total{reason=\"storage\", x=~\"y.*\"}[1h])) >= 2\n\
           or on (job) b_seconds offset 5m > 2 * 3600 and c == bool 1 unless \
           absent(up{job=\"$job\", instance=~\"${instance}\"}) + label_replace(d, \"dst\", \"$1\", \"src\", \"(.*)\") \
           * on (instance) group_left (version) e{v='it\\'s'} / sum(f) without (g)",
    );
    let names: Vec<&str> = found.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(names, ["a_total", "b_seconds", "c", "up", "d", "e", "f"]);
    assert_eq!(
        found[0].matchers,
        [
            ("reason".into(), "=".into(), "storage".into()),
            ("x".into(), "=~".into(), "y.*".into())
        ]
    );
    assert_eq!(
        found[3].matchers[1],
        ("instance".into(), "=~".into(), "${instance}".into())
    );
    assert_eq!(
        found[5].matchers,
        [("v".into(), "=".into(), "it\\'s".into())]
    );
}

/// Every selector of the rules and the dashboard, with where it came from.
fn named_selectors() -> Vec<(String, Selector)> {
    let mut out = Vec::new();
    for (alert, expr) in alerts(&rules_file()) {
        out.extend(
            selectors(&expr)
                .into_iter()
                .map(|s| (format!("alert {alert}"), s)),
        );
    }
    for (what, q) in dashboard_queries() {
        out.extend(selectors(&q).into_iter().map(|s| (what.clone(), s)));
    }
    out
}

/// A text exposition: metric name -> the label sets of its samples.
fn exposition(text: &str) -> BTreeMap<String, Vec<BTreeMap<String, String>>> {
    let mut out: BTreeMap<String, Vec<BTreeMap<String, String>>> = BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, _value) = line.rsplit_once(' ').expect("name value");
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => (n, parse_matchers(rest.strip_suffix('}').expect("}"))),
            None => (series, Vec::new()),
        };
        out.entry(name.to_owned())
            .or_default()
            .push(labels.into_iter().map(|(k, _, v)| (k, v)).collect());
    }
    out
}

fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

#[test]
fn a_real_daemon_exports_every_metric_the_rules_and_the_dashboard_name() {
    // What must be there, before anything starts.
    let wanted = named_selectors();
    let foreign: BTreeMap<&str, &str> = FOREIGN.iter().copied().collect();
    for (what, s) in &wanted {
        assert!(
            s.metric.starts_with("lifeboat_") || foreign.contains_key(s.metric.as_str()),
            "{what} names {}, which is neither lifeboat's nor a known exporter's (FOREIGN)",
            s.metric
        );
    }

    // A daemon doing everything it exports metrics for: leading, backing up, verifying,
    // drilling and recording the change log.
    let version = EtcdVersion::V3_5_30;
    let cluster = Cluster::start(version, 1);
    support::runtime().block_on(async {
        let mut c = support::workload::connect(&cluster).await;
        support::workload::kubernetes_like(&mut c, 1, 5).await;
    });
    let dir = tempfile::tempdir().expect("temp dir");
    let started = chrono::Utc::now().timestamp() as f64;
    let config = format!(
        "[etcd]\nendpoints = [\"{}\"]\n[storage]\nurl = \"file://{}\"\n\
         [backup]\nschedule = \"*/3 * * * * *\"\nspool-dir = {}\n\
         [verify]\nschedule = \"*/3 * * * * *\"\n\
         [drill]\nschedule = \"*/4 * * * * *\"\netcd-binary = {}\netcdutl = {}\n\
         [changes]\nenabled = true\nflush-interval = \"1s\"\nquiet-interval = \"2s\"\n\
         [daemon]\nlease-ttl = \"5s\"\n",
        cluster.endpoints()[0],
        dir.path().join("backups").display(),
        quoted(dir.path()),
        quoted(&version.etcd()),
        quoted(&version.etcdutl().expect("etcdutl")),
    );
    let daemon = Daemon::start(dir.path(), "d", &config, &[]);
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = |text: &str| {
        let m = |n: &str| support::lifeboat::metric(text, n).unwrap_or(-1.0);
        m("lifeboat_leader") == 1.0
            && m("lifeboat_backups_total") >= 1.0
            && m("lifeboat_verify_last_attempt_success") == 1.0
            && m("lifeboat_verify_last_attempt_timestamp_seconds") >= started
            && m("lifeboat_drill_last_attempt_success") == 1.0
            && m("lifeboat_drill_last_attempt_timestamp_seconds") >= started
            && m("lifeboat_changes_recording") == 1.0
            && m("lifeboat_changes_segments_total") >= 1.0
    };
    let mut text = daemon.metrics();
    while !done(&text) {
        assert!(
            Instant::now() < deadline,
            "the daemon did not lead, back up, verify, drill and record within 120 s:\n{text}\n{}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(250));
        text = daemon.metrics();
    }
    let exported = exposition(&text);

    let mut missing = BTreeSet::new();
    let mut wrong_labels = BTreeSet::new();
    for (what, s) in &wanted {
        if foreign.contains_key(s.metric.as_str()) {
            continue;
        }
        let Some(series) = exported.get(&s.metric) else {
            missing.insert(format!("{} ({what})", s.metric));
            continue;
        };
        // Equality matchers on lifeboat's own labels must name a value it exports
        // (job and instance are the scrape's).
        for (label, op, value) in &s.matchers {
            if op != "=" || label == "job" || label == "instance" {
                continue;
            }
            if !series.iter().any(|l| l.get(label) == Some(value)) {
                wrong_labels.insert(format!("{}{{{label}=\"{value}\"}} ({what})", s.metric));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "named by the rules or the dashboard, not exported by the daemon: {missing:#?}\n{text}"
    );
    assert!(
        wrong_labels.is_empty(),
        "label values no exported series has: {wrong_labels:#?}\n{text}"
    );
}
