//! `lifeboat restore`: rebuilding a cluster from one backup on every member, following
//! the eight documented steps (docs/restore.md).
//!
//! - [`plan`]: the plan, a pure function of the configured members, the backup and what
//!   preflight found; printed by `restore plan`.
//! - `settings`: the `[restore]` configuration, checked once (re-exported by [`plan`]).
//! - [`run`]: carries the plan out, with its `journal` and the `ports` check that a
//!   stopped member is really stopped.
//! - [`transport`]: running a member's commands here or over ssh.
//! - [`names`]: what may reach a path or a shell (backup ids from the bucket, the
//!   config's names, dirs, users and hosts).

mod control;
pub mod drill;
mod journal;
pub mod names;
pub mod plan;
mod ports;
pub mod run;
mod settings;
pub mod transport;

use std::time::Duration;

use plan::{MemberSpec, Probe};
use transport::quote;

/// Step 2's look at a member: which restore tool it has, its version, whether it can
/// bump revisions, and which of `bundle_files` (the backup's restore bundle) it lacks.
/// Read-only.
pub async fn probe(
    m: &MemberSpec,
    limit: Duration,
    bundle_files: &[String],
) -> Result<Probe, String> {
    let at = |e: String| format!("member {} ({}): {e}", m.name, m.host);
    let find = match &m.etcdutl {
        Some(p) => format!(
            "test -x {p} && echo {p}",
            p = quote(&p.display().to_string())
        ),
        None => "command -v etcdutl || command -v etcdctl".into(),
    };
    let ran = transport::run(&m.host.shell(&find), limit)
        .await
        .map_err(at)?;
    let tool = ran.stdout.lines().next().unwrap_or("").trim().to_owned();
    if !ran.success || tool.is_empty() {
        // 255: ssh itself failed (host key, authentication, unreachable): say that.
        if ran.code == Some(255) && m.host != transport::Host::Local {
            return Err(at(format!("ssh failed: {}", ran.tail())));
        }
        return Err(at(match &m.etcdutl {
            Some(p) => format!("{} is not an executable", p.display()),
            None => "neither etcdutl nor etcdctl is on the PATH (set etcdutl = \"...\")".into(),
        }));
    }
    let mut script = format!(
        "{t} version; if {t} snapshot restore --help 2>&1 | grep -q -- --bump-revision; \
         then echo BUMP=yes; else echo BUMP=no; fi",
        t = quote(&tool)
    );
    // etcd 3.6 refuses a v2store with custom content; 3.5.20+ and 3.6 can check for it.
    script.push_str(&format!(
        // (etcdctl 3.4 answers any `check ...` with its own help: look for the usage line.)
        "; if {t} check v2store --help 2>&1 | grep -q 'check v2store \\[flags\\]'; then echo CHECKV2=yes; fi",
        t = quote(&tool)
    ));
    // Paths from the manifest (checked: absolute, plain, no control characters), quoted.
    for f in bundle_files {
        script.push_str(&format!("; [ -e {q} ] || echo MISSING={q}", q = quote(f)));
    }
    let ran = transport::run(&m.host.shell(&script), limit)
        .await
        .map_err(at)?;
    let version = ran
        .stdout
        .lines()
        .find_map(|l| {
            let (name, v) = l.split_once(" version: ")?;
            name.starts_with("etcd").then(|| v.trim().to_owned())
        })
        .ok_or_else(|| {
            at(format!(
                "`{tool} version` did not say its version: {}",
                ran.tail()
            ))
        })?;
    Ok(Probe {
        member: m.name.clone(),
        tool,
        version,
        can_bump: ran.stdout.lines().any(|l| l.trim() == "BUMP=yes"),
        can_check_v2store: ran.stdout.lines().any(|l| l.trim() == "CHECKV2=yes"),
        missing_bundle_files: ran
            .stdout
            .lines()
            .filter_map(|l| l.strip_prefix("MISSING="))
            .map(str::to_owned)
            .collect(),
    })
}

/// The first of `names` found on this host's PATH.
pub fn find_on_path(names: &[&str]) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|n| {
        std::env::split_paths(&path)
            .map(|d| d.join(n))
            .find(|p| p.is_file())
    })
}
