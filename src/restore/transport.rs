//! Where a member's commands run: on this host, or over the system's `ssh`
//! (BatchMode, so a missing key or an unknown host key fails instead of prompting;
//! known-hosts checking stays as the operator configured it).

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

use super::names;

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
        if host.is_empty() {
            return Err(format!("host {t:?}: no host name"));
        }
        // Both reach ssh's command line: a leading `-` would be an option, and a shell
        // character has no business in a user or host name.
        names::check_ssh_word("host", host).map_err(|e| format!("host {t:?}: {e}"))?;
        if let Some(u) = &user {
            names::check_ssh_word("user", u).map_err(|e| format!("host {t:?}: {e}"))?;
        }
        Ok(Host::Ssh {
            user,
            host: host.to_owned(),
            port,
            config: None,
        })
    }

    /// Uses this ssh_config file for ssh (`[restore] ssh-config`).
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
                // `--` first: the destination is never taken for an option.
                argv.push("--".into());
                argv.push(self.destination().unwrap_or_default());
                // ssh hands the remote command to the remote user's shell as one string.
                argv.push(format!("sh -c {}", quote(script)));
                argv
            }
        }
    }

    /// The argv that copies a local file to `remote` there. Over ssh the file is the
    /// command's standard input ([`Copy::stdin`]) and the remote shell writes it with
    /// `cat`: the remote path is quoted by us, once, for that shell, so no scp mode
    /// (SFTP, or the legacy protocol whose remote side parses the path with a shell)
    /// decides what a name with `;`, `$( )` or quotes means. It lands under a `.part`
    /// name first and is renamed when complete, so a repeated copy is harmless.
    pub fn copy(&self, local: &Path, remote: &Path) -> Copy {
        let to = quote(&remote.display().to_string());
        match self {
            // A hard link when both are on one filesystem (instant: the file is only read),
            // else a copy.
            Host::Local => {
                let from = quote(&local.display().to_string());
                Copy {
                    argv: Host::Local.shell(&format!(
                        "ln -f -- {from} {to} 2>/dev/null || cp -- {from} {to}"
                    )),
                    stdin: None,
                }
            }
            Host::Ssh { .. } => {
                let part = quote(&format!("{}.part", remote.display()));
                Copy {
                    argv: self.shell(&format!(
                        "cat > {part} && mv -f -- {part} {to} || {{ rm -f -- {part}; exit 1; }}"
                    )),
                    stdin: Some(local.to_path_buf()),
                }
            }
        }
    }
}

/// A copy command and the local file it reads on its standard input, if any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copy {
    pub argv: Vec<String>,
    pub stdin: Option<std::path::PathBuf>,
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
    run_with_input(argv, None, limit).await
}

/// Runs an argv with a time limit, its standard input read from `stdin` (else
/// `/dev/null`). The command runs in a process group of its own: when it runs over, or
/// when the caller stops waiting (SIGTERM during `restore run`), the whole group is
/// killed, not only the shell at its top. A command that ends by itself leaves what it
/// started in the background alone (an `etcd-start` does that).
pub async fn run_with_input(
    argv: &[String],
    stdin: Option<&Path>,
    limit: Duration,
) -> Result<Ran, String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    let input = match stdin {
        None => Stdio::null(),
        Some(p) => std::fs::File::open(p)
            .map(Stdio::from)
            .map_err(|e| format!("cannot read {}: {e}", p.display()))?,
    };
    let child = tokio::process::Command::new(program)
        .args(args)
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    let mut group = GroupGuard(child.id());
    let result = tokio::time::timeout(limit, child.wait_with_output()).await;
    if let Ok(Ok(_)) = &result {
        group.0 = None;
    }
    match result {
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

/// Kills a command's process group unless disarmed (its pid set to `None`).
struct GroupGuard(Option<u32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pid) = self.0.and_then(|p| i32::try_from(p).ok()) {
            // SAFETY: kill(2) on the process group this module created for the command
            // (process_group(0): the group's id is the leader's pid). A group already gone
            // gives ESRCH, which is fine.
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
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
        // Users and hosts that ssh would take for options, or a shell for commands.
        for bad in [
            "ssh://-oProxyCommand=touch${IFS}pwned",
            "ssh://root@-oProxyCommand=x",
            "ssh://-l@cp1",
            "ssh://ro ot@cp1",
            "ssh://cp1;reboot",
            "ssh://$(id)@cp1",
            "ssh://cp\u{1}1",
        ] {
            let e = Host::parse(Some(bad)).unwrap_err();
            assert!(e.contains("refused"), "{bad}: {e}");
        }
        assert!(Host::parse(Some("ssh://[fe80::1]:22")).is_ok());
    }

    /// What the remote login shell does with the copy command, done here by `sh -c` on
    /// the ssh argv's last word: a remote name full of `;`, `$( )`, quotes and spaces is
    /// written exactly there, and nothing in it runs.
    #[test]
    fn a_hostile_remote_name_is_written_literally_and_runs_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("snapshot.db");
        std::fs::write(&src, b"snapshot bytes").unwrap();
        let nasty = dir
            .path()
            .join("x;touch pwned1;$(touch pwned2)`touch pwned3` it's \"q\".db");
        let ssh = Host::parse(Some("ssh://root@cp2")).unwrap();
        let copy = ssh.copy(&src, &nasty);
        let remote_command = copy.argv.last().unwrap();
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(remote_command)
            .current_dir(dir.path())
            .stdin(std::fs::File::open(copy.stdin.as_ref().unwrap()).unwrap())
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        assert_eq!(std::fs::read(&nasty).unwrap(), b"snapshot bytes");
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| !n.starts_with("pwned")), "{names:?}");
        // The same for the local copy.
        let nasty2 = dir.path().join("$(touch pwned4);y");
        let argv = Host::Local.copy(&src, &nasty2).argv;
        let ran = std::process::Command::new(&argv[0])
            .args(&argv[1..])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(ran.status.success());
        assert_eq!(std::fs::read(&nasty2).unwrap(), b"snapshot bytes");
        assert!(!dir.path().join("pwned4").exists());
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
                "--",
                "root@cp2",
                r"sh -c 'systemctl stop etcd && echo '\''done'\'''"
            ]
        );
        let copy = ssh.copy(Path::new("/tmp/s.db"), Path::new("/var/lib/s.db"));
        assert_eq!(copy.stdin.as_deref(), Some(Path::new("/tmp/s.db")));
        assert_eq!(
            copy.argv.last().map(String::as_str),
            Some(
                "sh -c 'cat > /var/lib/s.db.part && mv -f -- /var/lib/s.db.part /var/lib/s.db \
                 || { rm -f -- /var/lib/s.db.part; exit 1; }'"
            )
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
            ssh.copy(Path::new("/a"), Path::new("/b")).argv[..3],
            ["ssh", "-F", "/etc/lifeboat/ssh_config"]
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
        // What a command started is killed with it when it runs over.
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("still-running");
        let late = rt.block_on(run(
            &Host::Local.shell(&format!(
                "(sleep 1; touch {}) & wait",
                quote(&marker.display().to_string())
            )),
            Duration::from_millis(200),
        ));
        assert!(late.is_err());
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            !marker.exists(),
            "the command's child outlived the time limit"
        );
    }
}
