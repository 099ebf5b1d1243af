//! The `lifeboat` binary: parse the command line, set up logging, call the library, and
//! turn the outcome into an exit code (0 success, 2 usage/config error, 1 failure).

use std::io::Write;
use std::process::ExitCode;

use clap::Parser;
use etcd_lifeboat::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    bound_allocator();
    // Everything lifeboat writes may hold snapshot data (every Kubernetes Secret): files
    // 0600, directories 0700, whatever the caller's umask.
    // SAFETY: umask only sets the process's file-creation mask; no memory is involved.
    unsafe {
        libc::umask(0o077);
    }
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors.
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let config = match cli::load_config(&cli) {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), e.exit_code()),
    };
    let log_format = cli
        .log_format
        .unwrap_or(match config.log.format.as_deref() {
            Some("json") => LogFormat::Json,
            _ => LogFormat::Text,
        });
    init_logging(cli.verbose, log_format);

    // A bug must still end with a message and exit code 1, not a Rust panic code.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("lifeboat: internal error (this is a bug, please report it): {info}");
    }));
    let stdout = std::io::stdout();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut out = stdout.lock();
        let r = cli::run(&cli, &config, &mut out);
        let _ = out.flush();
        r
    }));
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => fail(&e.to_string(), e.exit_code()),
        Err(_) => ExitCode::from(1),
    }
}

/// glibc's malloc gives each thread that allocates its own arena (up to 8 per core) and
/// keeps what is freed there for reuse: the daemon, whose backups pass buffers between
/// tokio workers, blocking threads and zstd's threads, grew from 70 to 147 MB within 65
/// backups and stayed there. Two arenas, and buffers of 256 KiB or more always mapped
/// (so they go back to the system when freed; glibc would otherwise raise that
/// threshold to the largest buffer freed, 32 MiB at most), keep the resident size flat
/// on any core count (`make bench`, docs/benchmarks.md). `MALLOC_ARENA_MAX` and
/// `MALLOC_MMAP_THRESHOLD_`, when set, still win.
fn bound_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let set = |name: &str| std::env::var_os(name).is_some();
        // SAFETY: mallopt only changes malloc's tuning; it is called before any other
        // thread exists.
        unsafe {
            if !set("MALLOC_ARENA_MAX") {
                libc::mallopt(libc::M_ARENA_MAX, 2);
            }
            if !set("MALLOC_MMAP_THRESHOLD_") {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
            }
        }
    }
}

fn fail(message: &str, code: i32) -> ExitCode {
    eprintln!("lifeboat: {message}");
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn init_logging(verbose: u8, format: LogFormat) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
