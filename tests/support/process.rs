//! Process plumbing shared by the server helpers: spawning children that die
//! with the test process, bounded waits, free loopback ports, log tails.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// How long `stop`-style helpers wait after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// Interval between two readiness polls.
pub const POLL_INTERVAL: Duration = Duration::from_millis(50);

type SpawnRequest = (Command, mpsc::Sender<io::Result<Child>>);

/// `PR_SET_PDEATHSIG` fires when the *thread* that forked the child exits, not
/// when the process does. Test threads (and tokio blocking threads) come and
/// go, so every server is forked from one thread that lives as long as the
/// test process: its children get SIGKILL exactly when the process dies.
fn spawner() -> &'static mpsc::Sender<SpawnRequest> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnRequest>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        thread::Builder::new()
            .name("support-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the support spawner thread");
        tx
    })
}

/// Spawns `cmd` so that the child is SIGKILLed when the test process dies
/// (even by SIGKILL). The caller still owns the [`Child`] and must kill/wait it.
pub fn spawn_guarded(mut cmd: Command) -> io::Result<Child> {
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure only calls async-signal-safe functions (prctl,
    // getppid) and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            // The parent may have died between fork and prctl.
            if libc::getppid() != parent {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .send((cmd, tx))
        .expect("support spawner thread is gone");
    rx.recv_timeout(Duration::from_secs(30))
        .map_err(|e| io::Error::other(format!("support spawner did not answer: {e}")))?
}

/// True while `pid` exists and is not a zombie.
pub fn pid_alive(pid: u32) -> bool {
    // SAFETY: kill with signal 0 only checks for existence/permission.
    let exists = unsafe { libc::kill(pid as libc::pid_t, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return false;
    }
    // A killed child whose parent has not reaped it yet still answers kill(0).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            // Format: "pid (comm) S ..."; comm may contain spaces or ')'.
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next());
            !matches!(state, Some("Z") | Some("X"))
        }
        Err(_) => false,
    }
}

/// Polls `child` until it exits or `timeout` passes.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> io::Result<Option<ExitStatus>> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        thread::sleep(Duration::from_millis(10));
    }
}

/// SIGKILL and reap. Never blocks for long: a SIGKILLed process exits at once.
pub fn kill_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let _ = child.kill();
    if !matches!(wait_timeout(child, Duration::from_secs(30)), Ok(Some(_))) {
        eprintln!(
            "support: process {} did not exit 30 s after SIGKILL",
            child.id()
        );
    }
}

/// SIGTERM, wait up to `grace`, then SIGKILL. Returns true if it exited on SIGTERM.
pub fn terminate_child(child: &mut Child, grace: Duration) -> bool {
    if let Ok(Some(_)) = child.try_wait() {
        return true;
    }
    // SAFETY: plain kill(2) on our own, not yet reaped, child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    if let Ok(Some(_)) = wait_timeout(child, grace) {
        return true;
    }
    kill_child(child);
    false
}

/// Describes a command for error messages.
pub fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs `cmd` to completion with captured stdout/stderr, killing it and
/// panicking if it runs longer than `timeout`.
pub fn output_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let what = describe(&cmd);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = spawn_guarded(cmd).unwrap_or_else(|e| panic!("cannot run `{what}`: {e}"));
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let status = match wait_timeout(&mut child, timeout) {
        Ok(Some(status)) => status,
        Ok(None) => {
            kill_child(&mut child);
            let stderr = err_reader.join().unwrap_or_default();
            panic!(
                "`{what}` did not finish within {timeout:?}; stderr:\n{}",
                String::from_utf8_lossy(&stderr)
            );
        }
        Err(e) => {
            kill_child(&mut child);
            panic!("waiting for `{what}` failed: {e}");
        }
    };
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// Like [`output_timeout`] but panics (with stdout and stderr) unless the
/// command exits with status 0.
pub fn run_ok(cmd: Command, timeout: Duration) -> Output {
    let what = describe(&cmd);
    let out = output_timeout(cmd, timeout);
    assert!(
        out.status.success(),
        "`{what}` failed with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `n` distinct free TCP ports on 127.0.0.1, found by binding port 0.
///
/// They are free only at the moment of the call: another process may take
/// one before the server binds it, so callers retry on "address in use".
pub fn free_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen so the ports are distinct.
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local_addr").port())
        .collect()
}

/// The last `n` lines of a log file (or a note that it cannot be read).
pub fn log_tail(path: &Path, n: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            let start = lines.len().saturating_sub(n);
            lines[start..].join("\n")
        }
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

/// Opens (appending) a log file for a child's stdout and stderr.
pub fn log_stdio(path: &Path) -> (Stdio, Stdio) {
    let f = File::options()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open log {}: {e}", path.display()));
    let g = f.try_clone().expect("clone log file handle");
    (Stdio::from(f), Stdio::from(g))
}

/// Appends a marker line to a log file (e.g. "--- restarted ---").
pub fn log_marker(path: &Path, text: &str) {
    if let Ok(mut f) = File::options().create(true).append(true).open(path) {
        let _ = writeln!(f, "{text}");
    }
}

/// Minimal HTTP/1.0 GET against a loopback address, bounded by `timeout`.
/// Returns (status code, body).
pub fn http_get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<(u16, String)> {
    assert!(addr.ip().is_loopback(), "support only talks to loopback");
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.take(1 << 20).read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| io::Error::other(format!("bad HTTP response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    TcpStream::connect_timeout(
        &SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(200),
    )
    .is_ok()
}

/// True if the env var is set to something other than "" / "0".
pub fn env_flag(name: impl AsRef<OsStr>) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty() && v != "0")
}

/// Unique token for cluster tokens, temp names, etc. (pid + counter + time).
pub fn unique_token(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:x}", std::process::id())
}

/// `len` random ASCII letters and digits.
pub fn random_alnum(len: usize) -> String {
    use rand::RngExt;
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..len)
        .map(|_| ALNUM[rng.random_range(0..ALNUM.len())] as char)
        .collect()
}

/// Creates `$TMPDIR/lifeboat-p<pid>-<kind>-XXXXXX`, first removing such
/// directories left behind by test processes that were killed (their pid is
/// gone) unless they hold a `KEEP` file (see `LIFEBOAT_KEEP_TEMP`).
pub fn owned_tempdir(kind: &str) -> tempfile::TempDir {
    sweep_stale_tempdirs();
    tempfile::Builder::new()
        .prefix(&format!("lifeboat-p{}-{kind}-", std::process::id()))
        .tempdir()
        .unwrap_or_else(|e| panic!("create temp dir for {kind}: {e}"))
}

/// File in an owned temp dir listing the pids of the servers spawned for it.
const SERVER_PIDS_FILE: &str = "server-pids";

/// Records a server pid in its owned temp dir (for [`sweep_stale_tempdirs`]).
pub fn record_server_pid(dir: &Path, pid: u32) {
    log_marker(&dir.join(SERVER_PIDS_FILE), &pid.to_string());
}

/// Marks an owned temp dir as kept for debugging (never swept).
pub fn keep_tempdir(dir: &mut tempfile::TempDir) {
    dir.disable_cleanup(true);
    let _ = std::fs::write(dir.path().join("KEEP"), b"LIFEBOAT_KEEP_TEMP\n");
    eprintln!("support: keeping {}", dir.path().display());
}

/// Removes temp dirs (and SeaweedFS sockets) of dead test processes.
/// Returns the directories removed.
pub fn sweep_stale_tempdirs() -> Vec<std::path::PathBuf> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix("lifeboat-p") else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let path = entry.path();
        if pid_alive(pid) || !path.is_dir() || path.join("KEEP").exists() {
            continue;
        }
        // Its servers get SIGKILL from the kernel when it dies, but may not
        // have exited yet: leave the dir to a later sweep until they have.
        let servers_alive = std::fs::read_to_string(path.join(SERVER_PIDS_FILE))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse::<u32>().ok())
            .any(pid_alive);
        if servers_alive || !super::s3::remove_stale_sockets_of(&path) {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}
