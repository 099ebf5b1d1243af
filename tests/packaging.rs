//! The files lifeboat ships for installing it: the systemd units (`systemd/`), the
//! Dockerfile and the operations guide (the Kubernetes manifests are rendered and checked
//! in `kubernetes.rs`, the alert rules and dashboard in `alerts.rs`). Nothing here runs
//! them; these tests keep them parsing, agreeing with each other (one config path) and
//! agreeing with the program (every example config is one lifeboat accepts, every metric
//! the daemon exports is documented), and they pin the properties an operator relies on:
//! the hardening of the units, one backup at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use etcd_lifeboat::config::Config;
use yaml_rust2::YamlLoader;

/// The one configuration file every shipped unit and manifest names.
const CONFIG_PATH: &str = "/etc/lifeboat/lifeboat.toml";
const BINARY: &str = "/usr/local/bin/lifeboat";
/// The daemon's default `[daemon] shutdown-timeout`, in seconds.
const DAEMON_SHUTDOWN_TIMEOUT: u64 = 60;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn relative(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Files under `dir`, recursively, whose names end with one of `suffixes`; sorted.
fn files_under(dir: &Path, suffixes: &[&str]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        let entries = fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| suffixes.iter().any(|s| n.ends_with(s)))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The first string after `--config` (or in `--config=PATH`) in `args`.
fn config_flag<S: AsRef<str>>(args: &[S]) -> Option<String> {
    let mut it = args.iter().map(AsRef::as_ref);
    while let Some(arg) = it.next() {
        if arg == "--config" {
            return it.next().map(str::to_owned);
        }
        if let Some(path) = arg.strip_prefix("--config=") {
            return Some(path.to_owned());
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// systemd units

/// A unit file as systemd reads it: sections of `Key=Value` assignments in order.
struct Unit {
    file: String,
    sections: Vec<(String, Vec<(String, String)>)>,
}

/// Parses the INI-like unit syntax: `[Section]`, `Key=Value`, `#`/`;` comments, a trailing
/// backslash continuing the line. Whatever systemd would warn about and ignore is an error.
fn parse_unit(file: &str, text: &str) -> Result<Unit, String> {
    let mut sections: Vec<(String, Vec<(String, String)>)> = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((n, line)) = lines.next() {
        let mut line = line.trim().to_owned();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        while line.ends_with('\\') {
            line.pop();
            match lines.next() {
                Some((_, next)) => {
                    line.push(' ');
                    line.push_str(next.trim());
                }
                None => return Err(format!("{file}:{}: continuation at the end", n + 1)),
            }
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name
                .strip_suffix(']')
                .ok_or_else(|| format!("{file}:{}: unclosed section header", n + 1))?;
            sections.push((name.to_owned(), Vec::new()));
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .ok_or_else(|| format!("{file}:{}: neither a section nor Key=Value: {line}", n + 1))?;
        let key = key.trim();
        if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(format!("{file}:{}: bad key {key:?}", n + 1));
        }
        let (_, assignments) = sections
            .last_mut()
            .ok_or_else(|| format!("{file}:{}: {key}= before any [Section]", n + 1))?;
        assignments.push((key.to_owned(), value.trim().to_owned()));
    }
    Ok(Unit {
        file: file.to_owned(),
        sections,
    })
}

impl Unit {
    fn load(name: &str) -> Unit {
        let path = repo().join("systemd").join(name);
        parse_unit(&relative(&path), &read(&path)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Every assignment of `key` in `section`, in order.
    fn values(&self, section: &str, key: &str) -> Vec<&str> {
        self.sections
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, a)| a.iter())
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The effective value of a single-valued setting: the last assignment.
    fn value(&self, section: &str, key: &str) -> Option<&str> {
        self.values(section, key).last().copied()
    }

    fn expect(&self, section: &str, key: &str) -> &str {
        self.value(section, key)
            .unwrap_or_else(|| panic!("{}: [{section}] {key}= not set", self.file))
    }

    /// The command line of `key` (`ExecStart`, ...), prefixes like `-` or `+` removed.
    fn command(&self, key: &str) -> Vec<&str> {
        let line = self.expect("Service", key);
        let mut words: Vec<&str> = line.split_whitespace().collect();
        if let Some(first) = words.first_mut() {
            *first = first.trim_start_matches(['-', '@', '+', '!', ':']);
        }
        words
    }
}

/// Settings systemd knows, per section, of those a unit here may plausibly use. systemd
/// only warns about an unknown (misspelt) key and runs the unit without it: a typo in a
/// hardening setting would silently drop the protection. Extend the list when a unit
/// needs a real setting that is missing (`systemd-analyze verify` confirms it exists).
const KNOWN_KEYS: &[(&str, &str)] = &[
    (
        "Unit",
        "Description Documentation Wants Requires After Before BindsTo PartOf Conflicts \
         OnFailure StartLimitIntervalSec StartLimitBurst ConditionPathExists \
         AssertPathExists",
    ),
    (
        "Service",
        "Type ExecStart ExecStartPre ExecStartPost ExecStop ExecReload Restart \
         RestartSec RestartPreventExitStatus TimeoutStartSec TimeoutStopSec TimeoutSec \
         NotifyAccess WatchdogSec KillMode KillSignal User Group SupplementaryGroups \
         Environment EnvironmentFile WorkingDirectory StateDirectory StateDirectoryMode \
         CacheDirectory RuntimeDirectory ConfigurationDirectory LoadCredential UMask \
         NoNewPrivileges ProtectSystem ProtectHome ReadWritePaths ReadOnlyPaths \
         InaccessiblePaths PrivateTmp PrivateDevices PrivateNetwork PrivateUsers \
         PrivateMounts ProtectKernelTunables ProtectKernelModules ProtectKernelLogs \
         ProtectControlGroups ProtectClock ProtectHostname ProtectProc ProcSubset \
         RestrictAddressFamilies RestrictNamespaces RestrictRealtime RestrictSUIDSGID \
         LockPersonality MemoryDenyWriteExecute RemoveIPC SystemCallFilter \
         SystemCallArchitectures SystemCallErrorNumber CapabilityBoundingSet \
         AmbientCapabilities IPAddressAllow IPAddressDeny DevicePolicy MemoryMax \
         MemoryHigh CPUQuota TasksMax Nice IOSchedulingClass LimitNOFILE \
         SyslogIdentifier",
    ),
    (
        "Timer",
        "OnCalendar OnBootSec OnStartupSec OnActiveSec OnUnitActiveSec \
         OnUnitInactiveSec RandomizedDelaySec FixedRandomDelay AccuracySec Persistent \
         WakeSystem Unit",
    ),
    ("Install", "WantedBy RequiredBy Also Alias"),
];

/// The hardening both services must carry, as (key, value). Multi-valued keys
/// (`ReadWritePaths`) must include the value.
const HARDENING: &[(&str, &str)] = &[
    ("NoNewPrivileges", "yes"),
    ("ProtectSystem", "strict"),
    ("ReadWritePaths", "/var/lib/lifeboat"),
    ("PrivateTmp", "yes"),
    ("ProtectHome", "yes"),
    ("PrivateDevices", "yes"),
    ("ProtectKernelTunables", "yes"),
    ("ProtectKernelModules", "yes"),
    ("ProtectKernelLogs", "yes"),
    ("ProtectControlGroups", "yes"),
    ("RestrictAddressFamilies", "AF_UNIX AF_INET AF_INET6"),
    ("RestrictNamespaces", "yes"),
    ("LockPersonality", "yes"),
    ("MemoryDenyWriteExecute", "yes"),
    ("SystemCallFilter", "@system-service"),
    ("CapabilityBoundingSet", ""),
    ("UMask", "0077"),
    ("User", "lifeboat"),
    ("Group", "lifeboat"),
    ("EnvironmentFile", "-/etc/lifeboat/env"),
];

fn assert_hardened(unit: &Unit) {
    for (key, want) in HARDENING {
        let values = unit.values("Service", key);
        let ok = match *key {
            "ReadWritePaths" => values
                .iter()
                .any(|v| v.split_whitespace().any(|p| p == *want)),
            _ => values.last() == Some(want),
        };
        assert!(
            ok,
            "{}: [Service] {key}={want} expected, found {values:?}",
            unit.file
        );
    }
    let state: Vec<&str> = unit
        .values("Service", "StateDirectory")
        .iter()
        .flat_map(|v| v.split_whitespace())
        .collect();
    assert!(
        state.contains(&"lifeboat"),
        "{}: StateDirectory {state:?}",
        unit.file
    );
    let memory = unit.expect("Service", "MemoryMax");
    assert!(
        !memory.is_empty() && memory != "infinity",
        "{}: MemoryMax={memory}",
        unit.file
    );
}

/// Seconds of a systemd time span like `90`, `90s`, `2min`, `1h`, `1min 30s`.
fn seconds(span: &str) -> Option<u64> {
    let mut total = 0;
    for part in span.split_whitespace() {
        let digits = part
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(part.len());
        let n: u64 = part[..digits].parse().ok()?;
        total += n * match &part[digits..] {
            "" | "s" | "sec" => 1,
            "m" | "min" => 60,
            "h" | "hr" => 3600,
            _ => return None,
        };
    }
    Some(total)
}

fn unit_files() -> Vec<PathBuf> {
    let files = files_under(&repo().join("systemd"), &[".service", ".timer"]);
    assert!(!files.is_empty(), "no units under systemd/");
    files
}

#[test]
fn unit_parser_rejects_what_systemd_would_ignore() {
    assert!(parse_unit("t", "[Service]\nType notify\n").is_err());
    assert!(parse_unit("t", "Type=notify\n").is_err());
    assert!(parse_unit("t", "[Service\nType=notify\n").is_err());
    let unit = parse_unit(
        "t",
        "# c\n[Service]\nExecStart=/bin/a \\\n  b\nCapabilityBoundingSet=\n",
    )
    .expect("valid");
    assert_eq!(unit.value("Service", "ExecStart"), Some("/bin/a  b"));
    assert_eq!(unit.value("Service", "CapabilityBoundingSet"), Some(""));
    assert_eq!(seconds("1min 30s"), Some(90));
    assert_eq!(seconds("soon"), None);
}

#[test]
fn every_systemd_unit_parses_and_uses_only_known_settings() {
    let known: BTreeMap<&str, Vec<&str>> = KNOWN_KEYS
        .iter()
        .map(|(section, keys)| (*section, keys.split_whitespace().collect()))
        .collect();
    for path in unit_files() {
        let file = relative(&path);
        let unit = parse_unit(&file, &read(&path)).unwrap_or_else(|e| panic!("{e}"));
        let main = if file.ends_with(".timer") {
            "Timer"
        } else {
            "Service"
        };
        let has = |section: &str| unit.sections.iter().any(|(s, _)| s == section);
        for section in ["Unit", main] {
            assert!(has(section), "{file}: no [{section}]");
        }
        // A service its timer starts is not enabled itself: with [Install] it would
        // also run at every boot.
        let timed = main == "Service" && path.with_extension("timer").is_file();
        assert_eq!(
            has("Install"),
            !timed,
            "{file}: [Install] {}",
            if timed {
                "in a timer's service"
            } else {
                "missing: systemctl enable would do nothing"
            }
        );
        for (section, assignments) in &unit.sections {
            let keys = known
                .get(section.as_str())
                .unwrap_or_else(|| panic!("{file}: unexpected section [{section}]"));
            for (key, _) in assignments {
                assert!(
                    keys.contains(&key.as_str()),
                    "{file}: [{section}] {key}= is not a setting systemd knows (a typo?); \
                     if it is real, add it to KNOWN_KEYS"
                );
            }
        }
        assert!(
            unit.value("Unit", "Description").is_some(),
            "{file}: no Description"
        );
    }
}

#[test]
fn daemon_unit_is_type_notify_runs_daemon_and_is_hardened() {
    let unit = Unit::load("lifeboat.service");
    assert_eq!(unit.expect("Service", "Type"), "notify");
    assert_eq!(
        unit.command("ExecStart"),
        [BINARY, "daemon", "--config", CONFIG_PATH]
    );
    assert_eq!(unit.expect("Service", "Restart"), "on-failure");
    let stop = unit.expect("Service", "TimeoutStopSec");
    let stop = seconds(stop).unwrap_or_else(|| panic!("TimeoutStopSec={stop}"));
    assert!(
        stop > DAEMON_SHUTDOWN_TIMEOUT,
        "TimeoutStopSec={stop}s: systemd would kill the daemon before its own \
         {DAEMON_SHUTDOWN_TIMEOUT}s shutdown timeout"
    );
    assert_hardened(&unit);
    assert_eq!(unit.expect("Install", "WantedBy"), "multi-user.target");
}

#[test]
fn backup_service_is_a_oneshot_with_the_same_hardening_as_the_daemon() {
    let daemon = Unit::load("lifeboat.service");
    let oneshot = Unit::load("lifeboat-backup.service");
    assert_eq!(oneshot.expect("Service", "Type"), "oneshot");
    assert_eq!(
        oneshot.command("ExecStart"),
        [BINARY, "backup", "--config", CONFIG_PATH]
    );
    // Prune, if run after the backup, really deletes (a dry run would prune nothing).
    for post in oneshot.values("Service", "ExecStartPost") {
        let words: Vec<&str> = post.split_whitespace().collect();
        assert_eq!(words, [BINARY, "prune", "--config", CONFIG_PATH]);
    }
    assert_hardened(&oneshot);
    // Everything else the daemon sets beyond how it is started and stopped.
    const LIFECYCLE: &[&str] = &[
        "Type",
        "ExecStart",
        "ExecStartPost",
        "Restart",
        "RestartSec",
        "RestartPreventExitStatus",
        "TimeoutStartSec",
        "TimeoutStopSec",
    ];
    let (_, settings) = daemon
        .sections
        .iter()
        .find(|(s, _)| s == "Service")
        .expect("[Service]");
    for (key, _) in settings {
        if LIFECYCLE.contains(&key.as_str()) {
            continue;
        }
        assert_eq!(
            oneshot.values("Service", key),
            daemon.values("Service", key),
            "{key}= differs between {} and {}",
            daemon.file,
            oneshot.file
        );
    }
}

#[test]
fn backup_timer_is_persistent_and_starts_the_backup_service() {
    let timer = Unit::load("lifeboat-backup.timer");
    assert!(!timer.expect("Timer", "OnCalendar").is_empty());
    assert_eq!(timer.expect("Timer", "Persistent"), "true");
    assert!(seconds(timer.expect("Timer", "RandomizedDelaySec")).is_some());
    let service = timer
        .value("Timer", "Unit")
        .unwrap_or("lifeboat-backup.service");
    assert_eq!(service, "lifeboat-backup.service");
    assert!(
        repo().join("systemd").join(service).is_file(),
        "the timer starts {service}, which is not shipped"
    );
    assert_eq!(timer.expect("Install", "WantedBy"), "timers.target");
}

#[test]
fn every_shipped_command_line_names_the_same_config_file() {
    let mut seen = Vec::new();
    for path in unit_files() {
        let file = relative(&path);
        let unit = parse_unit(&file, &read(&path)).unwrap_or_else(|e| panic!("{e}"));
        for key in ["ExecStart", "ExecStartPre", "ExecStartPost"] {
            for line in unit.values("Service", key) {
                let words: Vec<&str> = line.split_whitespace().collect();
                if words.first().is_some_and(|w| w.ends_with("/lifeboat")) {
                    let config = config_flag(&words);
                    seen.push((format!("{file} {key}"), config));
                }
            }
        }
    }
    assert!(seen.len() >= 3, "too few command lines found: {seen:?}");
    for (what, config) in &seen {
        assert_eq!(config.as_deref(), Some(CONFIG_PATH), "{what}");
    }
    // The install guide puts the file where the units look for it.
    let guide = read(&repo().join("systemd/README.md"));
    assert!(
        guide.contains(CONFIG_PATH),
        "systemd/README.md does not install {CONFIG_PATH}"
    );
}

#[test]
fn example_config_spool_dir_is_a_writable_state_directory_of_the_units() {
    let example = repo().join("config/lifeboat.toml");
    let config = Config::load(&example).unwrap_or_else(|e| panic!("{e}"));
    let spool = config
        .backup
        .spool_dir
        .expect("config/lifeboat.toml sets [backup] spool-dir");
    for name in ["lifeboat.service", "lifeboat-backup.service"] {
        let unit = Unit::load(name);
        // systemd creates each StateDirectory under /var/lib, owned by the unit's user;
        // lifeboat does not create the spool directory itself.
        let created: Vec<PathBuf> = unit
            .values("Service", "StateDirectory")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .map(|d| Path::new("/var/lib").join(d))
            .collect();
        assert!(
            created.contains(&spool),
            "{name}: StateDirectory= does not create {} ({created:?})",
            spool.display()
        );
        let writable = unit
            .values("Service", "ReadWritePaths")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .any(|p| spool.starts_with(p.trim_start_matches('-')));
        assert!(writable, "{name}: {} is read-only", spool.display());
    }
}

// ---------------------------------------------------------------------------------------
// Container image

/// The Dockerfile's instructions, continuation lines joined, comments dropped, split
/// into stages at each FROM: (instruction, arguments).
fn dockerfile_stages() -> Vec<Vec<(String, String)>> {
    let text = read(&repo().join("Dockerfile"));
    let mut stages: Vec<Vec<(String, String)>> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        if let Some(head) = trimmed.strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
            continue;
        }
        current.push_str(trimmed);
        let (instruction, rest) = current
            .split_once(char::is_whitespace)
            .unwrap_or((current.as_str(), ""));
        let instruction = instruction.to_ascii_uppercase();
        if instruction == "FROM" {
            stages.push(Vec::new());
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .push((instruction, rest.trim().to_owned()));
        current.clear();
    }
    stages
}

#[test]
fn dockerfile_final_stage_runs_lifeboat_as_a_non_root_user() {
    let stages = dockerfile_stages();
    assert!(stages.len() >= 2, "expected a multi-stage build");
    let builder = &stages[0];
    assert!(
        builder.iter().any(|(i, a)| i == "RUN"
            && a.contains("cargo build")
            && a.contains("--release")
            && a.contains("--locked")
            && a.contains("--bin lifeboat")),
        "the builder does not run cargo build --release --locked --bin lifeboat"
    );
    assert!(
        builder
            .iter()
            .any(|(i, a)| i == "RUN" && a.contains("protobuf-compiler")),
        "etcd-client needs protoc in the builder"
    );

    let last = stages.last().expect("a final stage");
    let get = |name: &str| {
        last.iter()
            .filter(|(i, _)| i == name)
            .map(|(_, a)| a.as_str())
            .next_back()
    };
    let entrypoint = get("ENTRYPOINT").expect("the final stage has ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint)
        .unwrap_or_else(|e| panic!("ENTRYPOINT {entrypoint} is not the exec (JSON) form: {e}"));
    assert_eq!(entrypoint, [BINARY]);
    assert!(
        last.iter()
            .any(|(i, a)| i == "COPY" && a.starts_with("--from=") && a.ends_with(BINARY)),
        "the final stage does not copy the built binary to {BINARY}"
    );

    // Man pages and completions are generated by the binary it built, into the
    // directories man, bash-completion, zsh and fish search, and copied over.
    let generate = builder
        .iter()
        .find(|(i, a)| i == "RUN" && a.contains("lifeboat man --dir"))
        .map(|(_, a)| a.as_str())
        .expect("the builder generates the man pages");
    for (command, place) in [
        ("lifeboat man --dir", "/out/man/man1"),
        (
            "lifeboat completions bash >",
            "/out/bash-completion/completions/lifeboat",
        ),
        (
            "lifeboat completions zsh >",
            "/out/zsh/vendor-completions/_lifeboat",
        ),
        (
            "lifeboat completions fish >",
            "/out/fish/vendor_completions.d/lifeboat.fish",
        ),
    ] {
        assert!(
            generate.contains(&format!("{command} {place}")),
            "{command} {place} missing from: {generate}"
        );
    }
    assert!(
        last.iter()
            .any(|(i, a)| i == "COPY" && a == "--from=builder /out/ /usr/share/"),
        "the final stage does not copy the man pages and completions to /usr/share/"
    );

    let user = get("USER").expect("the final stage sets USER");
    let uid = user.split(':').next().unwrap_or("");
    let uid: u32 = uid
        .parse()
        .unwrap_or_else(|_| panic!("USER {user}: numeric, so runAsNonRoot can check it"));
    assert_ne!(uid, 0, "USER {user} is root");
    // (The Kubernetes pods that run as non-root use this uid: kubernetes.rs.)
}

#[test]
fn dockerignore_keeps_build_output_and_local_backups_out_of_the_build_context() {
    let text = read(&repo().join(".dockerignore"));
    let patterns: BTreeSet<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.trim_end_matches('/'))
        .collect();
    for needed in ["target", ".tools", ".git", "lifeboat-backups"] {
        assert!(
            patterns.contains(needed),
            ".dockerignore does not exclude {needed}/"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Documentation

/// The fenced blocks of a Markdown file written in `lang` (```toml, ```yaml).
fn fenced_blocks(text: &str, lang: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        let fence = line.trim_start();
        match &mut current {
            None if fence.strip_prefix("```") == Some(lang) => current = Some(String::new()),
            Some(block) if fence.starts_with("```") => {
                blocks.push(std::mem::take(block));
                current = None;
            }
            Some(block) => {
                block.push_str(line);
                block.push('\n');
            }
            None => {}
        }
    }
    blocks
}

#[test]
fn every_config_and_yaml_example_in_the_operations_guide_parses() {
    let guide = read(&repo().join("docs/operations.md"));
    let tomls = fenced_blocks(&guide, "toml");
    assert!(
        !tomls.is_empty(),
        "docs/operations.md has no ```toml example"
    );
    for (i, block) in tomls.iter().enumerate() {
        Config::parse(block)
            .unwrap_or_else(|e| panic!("docs/operations.md, toml example {}: {e}\n{block}", i + 1));
    }
    // Kustomize patches and the like (the alert rules are a file of their own:
    // config/prometheus/lifeboat-rules.yaml, tested by alerts.rs).
    for (i, block) in fenced_blocks(&guide, "yaml").iter().enumerate() {
        let docs = YamlLoader::load_from_str(block)
            .unwrap_or_else(|e| panic!("docs/operations.md, yaml example {}: {e}\n{block}", i + 1));
        assert!(
            docs.iter().all(|d| d["groups"].is_badvalue()),
            "docs/operations.md, yaml example {}: alert rules belong in config/prometheus/lifeboat-rules.yaml",
            i + 1
        );
    }
}

#[test]
fn every_metric_the_daemon_exports_is_documented() {
    let guide = read(&repo().join("docs/operations.md"));
    let mut names = BTreeSet::new();
    for path in files_under(&repo().join("src/daemon"), &[".rs"]) {
        let text = read(&path);
        // Metric names appear as string literals ("lifeboat_...") or in "# HELP" lines.
        for (i, _) in text.match_indices("lifeboat_") {
            let before = &text[..i];
            if !(before.ends_with('"') || before.ends_with("# HELP ")) {
                continue;
            }
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    assert!(
        names.len() > 5,
        "found too few metric names in src/daemon/: {names:?}"
    );
    let missing: Vec<&String> = names
        .iter()
        .filter(|n| !guide.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/operations.md does not explain {missing:?}"
    );
}
