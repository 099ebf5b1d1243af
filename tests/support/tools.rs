//! Where the test servers live (installed by `scripts/install-test-deps.sh`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of the installed test tools: `$LIFEBOAT_TOOLS_DIR`, else `<repo>/.tools`.
pub fn tools_dir() -> PathBuf {
    match std::env::var_os("LIFEBOAT_TOOLS_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools"),
    }
}

/// Returns `path` if it is an executable file, else panics with the fix.
pub fn require_binary(path: PathBuf) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(&path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => path,
        Ok(_) => panic!(
            "test binary {} exists but is not an executable file; \
             run `make test` (it installs test servers via scripts/install-test-deps.sh)",
            path.display()
        ),
        Err(e) => panic!(
            "missing test binary {} ({e}); \
             run `make test` (it installs test servers via scripts/install-test-deps.sh)",
            path.display()
        ),
    }
}

/// SeaweedFS `weed` binary.
pub fn weed() -> PathBuf {
    require_binary(tools_dir().join("bin").join("weed"))
}

/// `zstd` command-line binary.
pub fn zstd() -> PathBuf {
    require_binary(tools_dir().join("bin").join("zstd"))
}

/// The stock age CLI (Debian bookworm's), to prove encrypted backups decrypt without us.
pub fn age() -> PathBuf {
    require_binary(tools_dir().join("bin").join("age"))
}

/// `kubectl` 1.36 (Debian sid's), for `kubectl kustomize` of config/kubernetes/.
/// Never the one on the PATH: that may be any version, or none.
pub fn kubectl() -> PathBuf {
    require_binary(tools_dir().join("bin").join("kubectl"))
}

/// `promtool` 3.5 (Debian sid's, from the prometheus source package), for the alert rules.
pub fn promtool() -> PathBuf {
    require_binary(tools_dir().join("bin").join("promtool"))
}

/// Azurite's blob service (`npm ci` of scripts/azurite/ into `<tools>/azurite`).
pub fn azurite_blob() -> PathBuf {
    require_binary(
        tools_dir()
            .join("azurite")
            .join("node_modules")
            .join(".bin")
            .join("azurite-blob"),
    )
}

/// The Python of the moto venv (`<tools>/moto`), which runs `tests/support/moto_server.py`.
pub fn moto_python() -> PathBuf {
    require_binary(tools_dir().join("moto").join("bin").join("python"))
}

/// The etcd releases the tests run against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EtcdVersion {
    V3_5_30,
    V3_4_23,
    V3_5_1,
}

impl EtcdVersion {
    pub const ALL: [EtcdVersion; 3] = [
        EtcdVersion::V3_5_30,
        EtcdVersion::V3_4_23,
        EtcdVersion::V3_5_1,
    ];

    /// "3.5.30", "3.4.23", "3.5.1".
    pub fn label(self) -> &'static str {
        match self {
            EtcdVersion::V3_5_30 => "3.5.30",
            EtcdVersion::V3_4_23 => "3.4.23",
            EtcdVersion::V3_5_1 => "3.5.1",
        }
    }

    /// True for 3.5.x (has `etcdutl`, `--unsafe-no-fsync`, ...).
    pub fn is_3_5(self) -> bool {
        !matches!(self, EtcdVersion::V3_4_23)
    }

    /// Directory holding this version's binaries: `<tools>/etcd-<label>`.
    pub fn dir(self) -> PathBuf {
        tools_dir().join(format!("etcd-{}", self.label()))
    }

    pub fn etcd(self) -> PathBuf {
        require_binary(self.dir().join("etcd"))
    }

    pub fn etcdctl(self) -> PathBuf {
        require_binary(self.dir().join("etcdctl"))
    }

    /// `etcdutl` for 3.5.x (panics if that is missing); `None` for 3.4.
    pub fn etcdutl(self) -> Option<PathBuf> {
        self.is_3_5()
            .then(|| require_binary(self.dir().join("etcdutl")))
    }

    /// An `etcdctl` command with `ETCDCTL_API=3` and no inherited `ETCDCTL_*`
    /// settings (endpoints, credentials) from the environment.
    pub fn etcdctl_command(self) -> Command {
        let mut cmd = Command::new(self.etcdctl());
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL_") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3");
        cmd
    }

    /// `snapshot status <file>` with this version's own tool:
    /// `etcdutl` for 3.5.x, `ETCDCTL_API=3 etcdctl` for 3.4.
    /// Add `-w json` / `-w table` as needed.
    pub fn status_command(self, file: impl AsRef<Path>) -> Command {
        let mut cmd = match self.etcdutl() {
            Some(etcdutl) => Command::new(etcdutl),
            None => self.etcdctl_command(),
        };
        cmd.arg("snapshot").arg("status").arg(file.as_ref());
        cmd
    }
}

impl std::fmt::Display for EtcdVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
