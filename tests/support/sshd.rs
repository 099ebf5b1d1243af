//! A real OpenSSH server: Debian bookworm's `sshd` (installed in `.tools/openssh` by
//! `scripts/install-test-deps.sh`) on 127.0.0.1 with a free port, a generated host key
//! and one generated client key, plus an ssh_config that reaches it with exactly those:
//! the server's host key is the only known one, no agent, no password, BatchMode.
//!
//! The clients are the system's `ssh`, `scp` and `ssh-keygen` (Debian openssh-client),
//! the ones lifeboat runs for `ssh://` members. `scp` of OpenSSH 9 speaks SFTP, so the
//! server has `Subsystem sftp internal-sftp`.
//!
//! Privilege separation: sshd 9.x started as root insists on the user `sshd` and the
//! directory `/run/sshd` (compiled in); started as anyone else it needs neither, and
//! lets only that user log in. So:
//! - not root: sshd runs as the current user, who is the one logging in;
//! - root on a machine that has both (openssh-server installed): sshd runs as it is;
//! - root otherwise: sshd runs in a private mount namespace in which a small tmpfs
//!   covers `/run` (holding an empty `/run/sshd`) and a copy of `/etc/passwd` with an
//!   `sshd` line is bind-mounted over `/etc/passwd`. The machine itself is not changed.
//!   The commands run over ssh live in that namespace too: `/run` is empty for them.
//!   Where no mount namespace may be created (an unprivileged container), starting
//!   fails with a message saying what to do.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::process::{self, POLL_INTERVAL};
use super::tools;

const START_ATTEMPTS: usize = 5;
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Budget for one ssh/ssh-keygen invocation made by the bench itself.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 40;
/// Where the privsep user and directory must be for sshd started as root.
const PRIVSEP_DIR: &str = "/run/sshd";
const PRIVSEP_USER: &str = "sshd";

/// A running sshd. Dropping it SIGKILLs the server (sessions already open end with
/// their clients) and deletes its keys and files (unless `LIFEBOAT_KEEP_TEMP=1`).
pub struct Sshd {
    pub port: u16,
    /// The user that logs in: the one running the tests.
    pub user: String,
    /// sshd's stderr (`-e`): listening, accepted keys, refusals.
    pub log_path: PathBuf,
    /// The client's private key (its `.pub` is the only authorized key).
    pub client_key: PathBuf,
    /// The server's public host key, one line (`ssh-ed25519 AAAA... host`).
    pub host_public_key: String,
    ssh_config: PathBuf,
    child: Option<Child>,
    dir: TempDir,
}

impl Sshd {
    /// Starts sshd and waits until `ssh` with [`Sshd::ssh_config`] runs a command there.
    pub fn start() -> Sshd {
        let sshd = tools::require_binary(tools::tools_dir().join("openssh").join("sshd"));
        let mut last = String::new();
        for attempt in 1..=START_ATTEMPTS {
            let mut server = Self::spawn_new(&sshd);
            match server.wait_listening() {
                Ok(()) => {
                    server.check_login();
                    return server;
                }
                Err((true, message)) => {
                    eprintln!("support: sshd start attempt {attempt}: port taken, retrying");
                    last = message;
                }
                Err((false, message)) => panic!("sshd failed to start: {message}"),
            }
        }
        panic!(
            "sshd failed to start after {START_ATTEMPTS} attempts (ports kept being taken): {last}"
        )
    }

    fn spawn_new(sshd: &Path) -> Sshd {
        let dir = process::owned_tempdir("sshd");
        let d = dir.path();
        let user = current_user();
        let host_key = generate_key(d, "host_ed25519", "lifeboat-test-host");
        let client_key = generate_key(d, "client_ed25519", "lifeboat-test-client");
        let host_public_key = read_public(&host_key);
        let authorized = d.join("authorized_keys");
        std::fs::write(&authorized, format!("{}\n", read_public(&client_key)))
            .expect("write authorized_keys");
        let port = process::free_ports(1)[0];
        let config = d.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "# written by tests/support/sshd.rs\n\
                 ListenAddress 127.0.0.1\n\
                 Port {port}\n\
                 HostKey {host_key}\n\
                 PidFile none\n\
                 AuthorizedKeysFile {authorized}\n\
                 AuthenticationMethods publickey\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 UsePAM no\n\
                 PermitRootLogin prohibit-password\n\
                 AllowUsers {user}\n\
                 # The keys live in the world-writable temp dir.\n\
                 StrictModes no\n\
                 # Nothing from the user's home changes what a session runs.\n\
                 PermitUserRC no\n\
                 PermitUserEnvironment no\n\
                 Subsystem sftp internal-sftp\n\
                 LogLevel VERBOSE\n",
                host_key = host_key.display(),
                authorized = authorized.display(),
            ),
        )
        .expect("write sshd_config");
        let known_hosts = d.join("known_hosts");
        std::fs::write(
            &known_hosts,
            format!("[127.0.0.1]:{port} {host_public_key}\n"),
        )
        .expect("write known_hosts");
        let mut server = Sshd {
            port,
            user,
            log_path: d.join("sshd.log"),
            client_key,
            host_public_key,
            ssh_config: PathBuf::new(),
            child: None,
            dir,
        };
        server.ssh_config = server.ssh_config_with_known_hosts(&known_hosts);
        server.spawn(sshd, &config);
        server
    }

    fn spawn(&mut self, sshd: &Path, config: &Path) {
        let (out, err) = process::log_stdio(&self.log_path);
        let mut cmd = Command::new(sshd);
        // -D: stay in the foreground; -e: log to stderr. sshd re-executes itself for
        // every connection, which needs the absolute path it was started with.
        cmd.arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(config)
            .env("LD_LIBRARY_PATH", sshd.with_file_name("lib"))
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err);
        let in_namespace = match self.privsep_namespace() {
            Some(ns) => {
                ns.apply(&mut cmd);
                true
            }
            None => false,
        };
        let child = process::spawn_guarded(cmd).unwrap_or_else(|e| match in_namespace {
            true => panic!(
                "cannot start {} as root: sshd then needs the user `{PRIVSEP_USER}` and the \
                 directory {PRIVSEP_DIR}, which this machine lacks, and setting them up in a \
                 private mount namespace failed ({e}; it needs CAP_SYS_ADMIN). Run the tests \
                 as a non-root user, or create both as Debian's openssh-server package does: \
                 `adduser --system --no-create-home --home {PRIVSEP_DIR} --shell \
                 /usr/sbin/nologin {PRIVSEP_USER} && mkdir -p -m 0755 {PRIVSEP_DIR}`",
                sshd.display()
            ),
            false => panic!("cannot spawn {}: {e}", sshd.display()),
        });
        process::record_server_pid(self.dir.path(), child.id());
        self.child = Some(child);
    }

    /// What running sshd as root here takes, if the machine lacks the privsep user or
    /// directory (see the module documentation).
    fn privsep_namespace(&self) -> Option<PrivsepNamespace> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return None;
        }
        let has_user = Command::new("getent")
            .args(["passwd", PRIVSEP_USER])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if has_user && Path::new(PRIVSEP_DIR).is_dir() {
            return None;
        }
        assert!(
            !self.dir.path().starts_with("/run"),
            "the sshd temp dir {} is under /run, which the private mount namespace \
             replaces; set TMPDIR elsewhere",
            self.dir.path().display()
        );
        let passwd = if has_user {
            None
        } else {
            let system = std::fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
            let used: Vec<u32> = system
                .lines()
                .filter_map(|l| l.split(':').nth(2)?.parse().ok())
                .collect();
            let uid = (60000..65534)
                .rev()
                .find(|u| !used.contains(u))
                .expect("a free uid for the privsep user");
            let path = self.dir.path().join("passwd");
            std::fs::write(
                &path,
                format!(
                    "{system}{}{PRIVSEP_USER}:x:{uid}:65534:lifeboat test sshd privsep:\
                     {PRIVSEP_DIR}:/usr/sbin/nologin\n",
                    if system.ends_with('\n') { "" } else { "\n" }
                ),
            )
            .expect("write passwd copy");
            Some(path)
        };
        Some(PrivsepNamespace::new(passwd.as_deref()))
    }

    /// Waits for "Server listening"; `Err((port taken, message))` otherwise.
    fn wait_listening(&mut self) -> Result<(), (bool, String)> {
        let deadline = Instant::now() + START_TIMEOUT;
        let listening = format!("Server listening on 127.0.0.1 port {}.", self.port);
        loop {
            let child = self.child.as_mut().expect("sshd was spawned");
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    self.child = None;
                    let tail = self.log_tail(LOG_TAIL_LINES);
                    return Err((
                        tail.contains("Address already in use"),
                        format!(
                            "sshd exited with {status}; last lines of {}:\n{tail}",
                            self.log_path.display()
                        ),
                    ));
                }
                Err(e) => panic!("try_wait on sshd: {e}"),
            }
            let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
            if log.contains(&listening) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err((
                    false,
                    format!(
                        "no \"{listening}\" after {START_TIMEOUT:?}; last lines of {}:\n{}",
                        self.log_path.display(),
                        self.log_tail(LOG_TAIL_LINES)
                    ),
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The whole path a member command takes: key login, known host key, a shell.
    fn check_login(&self) {
        let out = self.ssh("echo lifeboat-sshd-ready");
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("ready"),
            "sshd on port {} is up but `ssh -F {}` cannot run a command there ({}): {}\n\
             last lines of {}:\n{}",
            self.port,
            self.ssh_config.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            self.log_path.display(),
            self.log_tail(LOG_TAIL_LINES)
        );
    }

    /// `ssh://<user>@127.0.0.1:<port>`, a member's `host`.
    pub fn host_url(&self) -> String {
        format!("ssh://{}@127.0.0.1:{}", self.user, self.port)
    }

    /// The client configuration (`ssh -F`, `[restore] ssh-config`): this user, this
    /// port, the client key only, this server's host key only, BatchMode.
    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    /// The same client configuration, but trusting the host keys in `known_hosts`
    /// instead (for host key mismatch tests). Written beside the server's files.
    pub fn ssh_config_with_known_hosts(&self, known_hosts: &Path) -> PathBuf {
        let path = self
            .dir
            .path()
            .join(format!("ssh_config-{}", process::unique_token("c")));
        std::fs::write(
            &path,
            format!(
                "# written by tests/support/sshd.rs\n\
                 Host *\n\
                 \x20 User {user}\n\
                 \x20 Port {port}\n\
                 \x20 IdentityFile {key}\n\
                 \x20 IdentitiesOnly yes\n\
                 \x20 IdentityAgent none\n\
                 \x20 UserKnownHostsFile {known_hosts}\n\
                 \x20 GlobalKnownHostsFile /dev/null\n\
                 \x20 StrictHostKeyChecking yes\n\
                 \x20 UpdateHostKeys no\n\
                 \x20 BatchMode yes\n\
                 \x20 ConnectTimeout 10\n",
                user = self.user,
                port = self.port,
                key = self.client_key.display(),
                known_hosts = known_hosts.display(),
            ),
        )
        .expect("write ssh_config");
        path
    }

    /// Runs `script` there with `ssh -F <ssh_config>` (bounded), like a member command.
    pub fn ssh(&self, script: &str) -> Output {
        let mut cmd = Command::new(client("ssh"));
        cmd.arg("-F")
            .arg(&self.ssh_config)
            .arg(format!("{}@127.0.0.1", self.user))
            .arg("--")
            .arg(script);
        process::output_timeout(cmd, CLIENT_TIMEOUT)
    }

    /// The server's temp dir (keys, configs, log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log_tail(&self, n: usize) -> String {
        process::log_tail(&self.log_path, n)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            process::kill_child(&mut child);
        }
        if process::env_flag("LIFEBOAT_KEEP_TEMP") {
            process::keep_tempdir(&mut self.dir);
        }
    }
}

/// Root without the privsep user or directory: a private mount namespace that has
/// them, set up in the child between fork and exec.
struct PrivsepNamespace {
    root: CString,
    run: CString,
    privsep_dir: CString,
    tmpfs: CString,
    tmpfs_name: CString,
    tmpfs_options: CString,
    /// A copy of /etc/passwd with the privsep user, when the system lacks it.
    passwd: Option<(CString, CString)>,
}

impl PrivsepNamespace {
    fn new(passwd: Option<&Path>) -> PrivsepNamespace {
        let c = |s: &str| CString::new(s).expect("no NUL");
        PrivsepNamespace {
            root: c("/"),
            run: c("/run"),
            privsep_dir: c(PRIVSEP_DIR),
            tmpfs: c("tmpfs"),
            tmpfs_name: c("lifeboat-sshd"),
            tmpfs_options: c("mode=0755,size=1m"),
            passwd: passwd.map(|p| (c(&p.display().to_string()), c("/etc/passwd"))),
        }
    }

    fn apply(self, cmd: &mut Command) {
        let PrivsepNamespace {
            root,
            run,
            privsep_dir,
            tmpfs,
            tmpfs_name,
            tmpfs_options,
            passwd,
        } = self;
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: the closure only makes async-signal-safe system calls (unshare,
        // mount, mkdir) on strings allocated before the fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || {
                check(libc::unshare(libc::CLONE_NEWNS))?;
                // Nothing mounted here propagates back to the machine.
                check(libc::mount(
                    std::ptr::null(),
                    root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    tmpfs_name.as_ptr(),
                    run.as_ptr(),
                    tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    tmpfs_options.as_ptr().cast(),
                ))?;
                check(libc::mkdir(privsep_dir.as_ptr(), 0o755))?;
                if let Some((copy, etc_passwd)) = &passwd {
                    check(libc::mount(
                        copy.as_ptr(),
                        etc_passwd.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ))?;
                }
                Ok(())
            });
        }
    }
}

/// The system's OpenSSH client `name` (`ssh`, `scp`, `ssh-keygen`), else a panic
/// saying how to get it.
pub fn client(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| {
            panic!(
                "`{name}` not found on the PATH: the ssh tests need the OpenSSH clients \
                 (Debian package openssh-client); `make test` (scripts/install-test-deps.sh) \
                 checks for them"
            )
        })
}

/// A new passphrase-less ed25519 key `dir/name` (and `dir/name.pub`).
pub fn generate_key(dir: &Path, name: &str, comment: &str) -> PathBuf {
    let path = dir.join(name);
    let mut cmd = Command::new(client("ssh-keygen"));
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(&path);
    process::run_ok(cmd, CLIENT_TIMEOUT);
    path
}

/// The one line of `<key>.pub`.
pub fn read_public(key: &Path) -> String {
    let mut p = key.as_os_str().to_owned();
    p.push(".pub");
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", Path::new(&p).display()))
        .trim()
        .to_owned()
}

/// The name of the user running the tests (who logs in).
fn current_user() -> String {
    let mut cmd = Command::new("id");
    cmd.arg("-un");
    let out = process::run_ok(cmd, CLIENT_TIMEOUT);
    let name = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    assert!(!name.is_empty(), "`id -un` printed no user name");
    name
}
