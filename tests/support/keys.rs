//! Throw-away age keys for tests.

use std::path::PathBuf;

/// An age key pair for a test: the recipient (`age1...`) and an identity file.
pub struct AgeKey {
    pub recipient: String,
    pub identity_file: PathBuf,
    _dir: tempfile::TempDir,
}

pub fn age_key() -> AgeKey {
    use age::secrecy::ExposeSecret;
    let id = age::x25519::Identity::generate();
    let dir = tempfile::tempdir().expect("temp dir");
    let identity_file = dir.path().join("key.txt");
    std::fs::write(
        &identity_file,
        format!("# test key\n{}\n", id.to_string().expose_secret()),
    )
    .expect("write key");
    AgeKey {
        recipient: id.to_public().to_string(),
        identity_file,
        _dir: dir,
    }
}
