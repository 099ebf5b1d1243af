//! Where a member's commands run: on this host, or over the system's `ssh`/`scp`
//! (BatchMode, so a missing key or an unknown host key fails instead of prompting;
//! known-hosts checking stays as the operator configured it).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

/// A member's host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Host {
    Local,
    Ssh {
        user: Option<String>,
        host: String,
        port: Option<u16>,
        /// An ssh_config file (`ssh -F`): identity, known hosts, jump hosts...
        #[serde(skip_serializing_if = "Option::is_none")]
        config: Option<std::path::PathBuf>,
    },
}

impl Host {
    /// `local` (or nothing), or `ssh://[user@]host[:port]`.
    pub fn parse(text: Option<&str>) -> Result<Host, String> {
        let Some(t) = text
            .map(str::trim)
            .filter(|t| !t.is_empty() && *t != "local")
        else {
            return Ok(Host::Local);
        };
        let rest = t
            .strip_prefix("ssh://")
            .ok_or_else(|| format!("host {t:?}: write `local` or `ssh://user@host[:port]`"))?;
        let (user, hostport) = match rest.split_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h),
            None => (None, rest),
        };
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => {
                let port = p
                    .parse::<u16>()
                    .map_err(|_| format!("host {t:?}: port {p:?} is not a number"))?;
                (h, Some(port))
            }
            _ => (hostport, None),
        };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if host.is_empty() || host.contains(['/', ' ']) {
            return Err(format!("host {t:?}: no host name"));
        }
        Ok(Host::Ssh {
            user,
            host: host.to_owned(),
            port,
            config: None,
        })
    }

    /// Uses this ssh_config file for ssh and scp (`[restore] ssh-config`).
    pub fn with_ssh_config(self, file: Option<&Path>) -> Host {
        match self {
            Host::Ssh {
                user, host, port, ..
            } => Host::Ssh {
                user,
                host,
                port,
                config: file.map(Path::to_path_buf),
            },
            local => local,
        }
    }

    fn destination(&self) -> Option<String> {
        match self {
            Host::Local => None,
            Host::Ssh { user, host, .. } => Some(match user {
                Some(u) => format!("{u}@{host}"),
                None => host.clone(),
            }),
        }
    }

    /// The argv that runs the shell `script` there.
    pub fn shell(&self, script: &str) -> Vec<String> {
        match self {
            Host::Local => vec!["sh".into(), "-c".into(), script.to_owned()],
            Host::Ssh { port, config, .. } => {
                let mut argv = ssh_options("ssh", *port, "-p", config.as_deref());
                argv.push(self.destination().unwrap_or_default());
                // ssh hands the remote command to the remote user's shell as one string.
                argv.push("--".into());
                argv.push(format!("sh -c {}", quote(script)));
                argv
            }
        }
    }

    /// The argv that copies a local file to `remote` there.
    pub fn copy(&self, local: &Path, remote: &Path) -> Vec<String> {
        match self {
            // A hard link when both are on one filesystem (instant: the file is only read),
            // else a copy.
            Host::Local => {
                let (from, to) = (
                    quote(&local.display().to_string()),
                    quote(&remote.display().to_string()),
                );
                Host::Local.shell(&format!(
                    "ln -f -- {from} {to} 2>/dev/null || cp -- {from} {to}"
                ))
            }
            Host::Ssh { port, config, .. } => {
                let mut argv = ssh_options("scp", *port, "-P", config.as_deref());
                argv.push("-q".into());
                argv.push("--".into());
                argv.push(local.display().to_string());
                argv.push(format!(
                    "{}:{}",
                    self.destination().unwrap_or_default(),
                    remote.display()
                ));
                argv
            }
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Local => f.write_str("local"),
            Host::Ssh { port, .. } => {
                write!(f, "ssh://{}", self.destination().unwrap_or_default())?;
                match port {
                    Some(p) => write!(f, ":{p}"),
                    None => Ok(()),
                }
            }
        }
    }
}

fn ssh_options(
    program: &str,
    port: Option<u16>,
    port_flag: &str,
    config: Option<&Path>,
) -> Vec<String> {
    let mut argv = vec![program.to_owned()];
    if let Some(c) = config {
        argv.push("-F".into());
        argv.push(c.display().to_string());
    }
    argv.extend([
        "-o".into(),
        "BatchMode=yes".into(),
        "-o".into(),
        "ConnectTimeout=10".into(),
    ]);
    if let Some(p) = port {
        argv.push(port_flag.into());
        argv.push(p.to_string());
    }
    argv
}

/// Quotes a word for a POSIX shell.
pub fn quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@%+".contains(&b))
    {
        return word.to_owned();
    }
    format!("'{}'", word.replace('\'', r"'\''"))
}

/// What a command did.
#[derive(Debug, Clone)]
pub struct Ran {
    pub success: bool,
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    /// The last lines of stderr (or stdout), for an error message.
    pub fn tail(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        let lines: Vec<&str> = text.trim().lines().collect();
        lines[lines.len().saturating_sub(3)..].join(" | ")
    }
}

/// Runs an argv with a time limit; the process is killed when it runs over.
pub async fn run(argv: &[String], limit: Duration) -> Result<Ran, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(format!("no result within {} s", limit.as_secs())),
        Ok(Err(e)) => Err(format!("{program}: {e}")),
        Ok(Ok(out)) => Ok(Ran {
            success: out.status.success(),
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_parse() {
        assert_eq!(Host::parse(None).unwrap(), Host::Local);
        assert_eq!(Host::parse(Some("local")).unwrap(), Host::Local);
        let h = Host::parse(Some("ssh://root@10.0.0.2:2222")).unwrap();
        assert_eq!(
            h,
            Host::Ssh {
                user: Some("root".into()),
                host: "10.0.0.2".into(),
                port: Some(2222),
                config: None,
            }
        );
        assert_eq!(h.to_string(), "ssh://root@10.0.0.2:2222");
        assert_eq!(
            Host::parse(Some("ssh://cp3")).unwrap().to_string(),
            "ssh://cp3"
        );
        assert!(Host::parse(Some("cp3")).unwrap_err().contains("ssh://"));
        assert!(Host::parse(Some("ssh://x:http")).is_err());
    }

    #[test]
    fn command_lines() {
        assert_eq!(quote("/var/lib/etcd"), "/var/lib/etcd");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        let local = Host::Local;
        assert_eq!(
            local.shell("systemctl stop etcd"),
            ["sh", "-c", "systemctl stop etcd"]
        );
        let ssh = Host::parse(Some("ssh://root@cp2:2222")).unwrap();
        assert_eq!(
            ssh.shell("systemctl stop etcd && echo 'done'"),
            [
                "ssh",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-p",
                "2222",
                "root@cp2",
                "--",
                r"sh -c 'systemctl stop etcd && echo '\''done'\'''"
            ]
        );
        assert_eq!(
            ssh.copy(Path::new("/tmp/s.db"), Path::new("/var/lib/s.db")),
            [
                "scp",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=10",
                "-P",
                "2222",
                "-q",
                "--",
                "/tmp/s.db",
                "root@cp2:/var/lib/s.db"
            ]
        );
    }

    #[test]
    fn an_ssh_config_file_goes_first() {
        let ssh = Host::parse(Some("ssh://cp2"))
            .unwrap()
            .with_ssh_config(Some(Path::new("/etc/lifeboat/ssh_config")));
        assert_eq!(
            ssh.shell("true")[..3],
            ["ssh", "-F", "/etc/lifeboat/ssh_config"]
        );
        assert_eq!(
            ssh.copy(Path::new("/a"), Path::new("/b"))[..3],
            ["scp", "-F", "/etc/lifeboat/ssh_config"]
        );
        assert_eq!(ssh.to_string(), "ssh://cp2");
    }

    #[test]
    fn local_commands_run_with_a_time_limit() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let ran = rt
            .block_on(run(
                &Host::Local.shell("echo hi; exit 3"),
                Duration::from_secs(5),
            ))
            .unwrap();
        assert_eq!(
            (ran.success, ran.code, ran.stdout.as_str()),
            (false, Some(3), "hi\n")
        );
        let late = rt.block_on(run(
            &Host::Local.shell("sleep 5"),
            Duration::from_millis(200),
        ));
        assert!(late.unwrap_err().contains("no result"));
    }
}
