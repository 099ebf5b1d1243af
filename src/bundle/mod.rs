//! The restore bundle: the files a restore on replacement hosts needs besides the
//! snapshot — the etcd PKI, kube-apiserver's EncryptionConfiguration (without it every
//! Secret in the snapshot is unreadable), kubeadm's config, k3s' token. `[bundle] files`
//! stores them with each backup as one more object, `bundles/<id>.age`: their contents
//! one after the other, always age-encrypted, each listed in the manifest with its
//! mode, size and sha256. `fetch --bundle DIR` writes them back.

use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::encryption::{Identities, Sink};
use crate::repository::manifest::{Bundle, BundleFile, MAX_BUNDLE_BYTES, check_bundle_path};
use crate::snapshot::status::hex;

fn sha(bytes: &[u8]) -> String {
    let d: [u8; 32] = Sha256::digest(bytes).into();
    hex(&d)
}

/// What `[bundle]` asks for.
#[derive(Clone)]
pub struct Settings {
    pub files: Vec<PathBuf>,
    /// Never empty: a bundle is not stored unencrypted.
    pub recipients: Vec<age::x25519::Recipient>,
}

/// A packed bundle: the bytes to store, and what the manifest lists.
pub struct Packed {
    pub bytes: Vec<u8>,
    pub files: Vec<BundleFile>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("files", &self.files)
            .field("recipients", &self.recipients.len())
            .finish()
    }
}

impl Packed {
    /// The manifest's entry for these bytes stored at `key`.
    pub fn entry(&self, key: String) -> Bundle {
        Bundle {
            key,
            size: self.bytes.len() as u64,
            sha256: sha(&self.bytes),
            files: self.files.clone(),
        }
    }
}

impl Settings {
    /// Checks `[bundle]`: absolute plain paths, each once, and recipients to encrypt to.
    pub fn new(
        files: &[PathBuf],
        recipients: Vec<age::x25519::Recipient>,
    ) -> Result<Option<Settings>, String> {
        if files.is_empty() {
            return Ok(None);
        }
        if recipients.is_empty() {
            return Err(
                "[bundle] files are set, but there is no age recipient to encrypt \
                        them to: the bundle holds keys and is never stored unencrypted \
                        (set [bundle] recipients or [encryption] recipients)"
                    .into(),
            );
        }
        let mut seen = std::collections::HashSet::new();
        for f in files {
            let text = f
                .to_str()
                .ok_or_else(|| format!("[bundle] files: {} is not UTF-8", f.display()))?;
            check_bundle_path(text).map_err(|e| format!("[bundle] files: {e}"))?;
            if !seen.insert(text) {
                return Err(format!("[bundle] files: {text} is listed twice"));
            }
        }
        Ok(Some(Settings {
            files: files.to_vec(),
            recipients,
        }))
    }

    /// Reads and encrypts the files; a file that cannot be read is an error naming it.
    pub fn pack(&self) -> Result<Packed, String> {
        let mut plain = Vec::new();
        let mut files = Vec::new();
        for path in &self.files {
            let what = |e: std::io::Error| format!("[bundle] files: {}: {e}", path.display());
            let meta = std::fs::metadata(path).map_err(what)?;
            if !meta.is_file() {
                return Err(format!(
                    "[bundle] files: {} is not a regular file",
                    path.display()
                ));
            }
            let mut f = std::fs::File::open(path).map_err(what)?;
            let start = plain.len();
            Read::by_ref(&mut f)
                .take(MAX_BUNDLE_BYTES + 1 - start as u64)
                .read_to_end(&mut plain)
                .map_err(what)?;
            if plain.len() as u64 > MAX_BUNDLE_BYTES {
                return Err(format!(
                    "[bundle] files hold more than {} MiB: a bundle is for keys and \
                     configuration, not data",
                    MAX_BUNDLE_BYTES >> 20
                ));
            }
            files.push(BundleFile {
                path: path.to_string_lossy().into_owned(),
                mode: meta.permissions().mode() & 0o777,
                size: (plain.len() - start) as u64,
                sha256: sha(&plain[start..]),
            });
        }
        let mut sink = Sink::new(Vec::new(), &self.recipients).map_err(|e| e.to_string())?;
        sink.write_all(&plain).map_err(|e| e.to_string())?;
        let bytes = sink.finish().map_err(|e| e.to_string())?;
        Ok(Packed { bytes, files })
    }
}

/// `fetch --bundle DIR`: reads the bundle of backup `m` and writes its files under `dir`.
pub async fn fetch(
    repo: &crate::repository::Repository,
    m: &crate::repository::Manifest,
    identities: Option<&Identities>,
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    let Some(b) = &m.bundle else {
        return Err(format!(
            "backup {} has no bundle: [bundle] files was not set when it was taken",
            m.id
        ));
    };
    let Some(ids) = identities else {
        return Err(
            "the bundle is encrypted: give --identity FILE or [encryption] identity-file".into(),
        );
    };
    let stored = repo
        .get_small(&b.key, b.size)
        .await
        .map_err(|e| e.to_string())?;
    unpack(b, &stored, ids, dir)
}

/// Decrypts `stored` (checked against `b`, which `Manifest::validate` has checked) and
/// writes each file under `dir` at its own path (`/etc/x` → `DIR/etc/x`) with its mode.
/// An existing file is never overwritten; nothing is written unless every file's
/// sha256 matches. Returns the paths written.
pub fn unpack(
    b: &Bundle,
    stored: &[u8],
    identities: &Identities,
    dir: &Path,
) -> Result<Vec<PathBuf>, String> {
    if stored.len() as u64 != b.size || sha(stored) != b.sha256 {
        return Err(format!(
            "{}: its bytes are not the ones the manifest lists",
            b.key
        ));
    }
    let decryptor =
        age::Decryptor::new(stored).map_err(|e| format!("{}: not an age file: {e}", b.key))?;
    let mut plain = Vec::new();
    decryptor
        .decrypt(identities.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| format!("{}: cannot decrypt with the identity file: {e}", b.key))?
        .take(MAX_BUNDLE_BYTES + 1)
        .read_to_end(&mut plain)
        .map_err(|e| format!("{}: {e}", b.key))?;
    let total = b.files.iter().fold(0u64, |t, f| t.saturating_add(f.size));
    if plain.len() as u64 != total {
        return Err(format!(
            "{}: holds {} bytes, its files {total}",
            b.key,
            plain.len()
        ));
    }
    let mut parts = Vec::new();
    let mut at = 0usize;
    for f in &b.files {
        let part = &plain[at..at + f.size as usize];
        at += f.size as usize;
        if sha(part) != f.sha256 {
            return Err(format!("{}: {} does not match its sha256", b.key, f.path));
        }
        let target = dir.join(f.path.trim_start_matches('/'));
        if target.symlink_metadata().is_ok() {
            return Err(format!(
                "{} exists already: lifeboat never overwrites a file (move it aside)",
                target.display()
            ));
        }
        parts.push((target, part, f.mode));
    }
    let mut written = Vec::new();
    for (target, part, mode) in parts {
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        let what = |e: std::io::Error| format!("{}: {e}", target.display());
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&target)
            .map_err(what)?;
        out.write_all(part)
            .and_then(|()| out.sync_all())
            .map_err(what)?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode)).map_err(what)?;
        written.push(target);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bundle_round_trips_with_modes_and_refuses_what_it_must() {
        let src = tempfile::tempdir().unwrap();
        let a = src.path().join("ca.key");
        let b = src.path().join("enc.yaml");
        std::fs::write(&a, b"-----BEGIN KEY-----").unwrap();
        std::fs::write(&b, b"kind: EncryptionConfiguration").unwrap();
        std::fs::set_permissions(&a, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o644)).unwrap();
        let id = age::x25519::Identity::generate();
        let s = Settings::new(&[a.clone(), b.clone()], vec![id.to_public()])
            .unwrap()
            .unwrap();
        let packed = s.pack().unwrap();
        assert!(packed.bytes.starts_with(b"age-encryption.org/v1"));
        let entry = packed.entry("bundles/x.age".into());
        let out = tempfile::tempdir().unwrap();
        let ids: Identities = vec![Box::new(id)];
        let written = unpack(&entry, &packed.bytes, &ids, out.path()).unwrap();
        assert_eq!(written.len(), 2);
        for (orig, mode) in [(&a, 0o600), (&b, 0o644)] {
            let back = out.path().join(orig.strip_prefix("/").unwrap());
            assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(orig).unwrap());
            let m = std::fs::metadata(&back).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode);
        }
        // Never over an existing file; never with bytes the manifest does not list.
        let again = unpack(&entry, &packed.bytes, &ids, out.path()).unwrap_err();
        assert!(again.contains("never overwrites"), "{again}");
        let mut bad = packed.bytes.clone();
        bad[40] ^= 1;
        assert!(unpack(&entry, &bad, &ids, out.path()).is_err());
        // No recipient, relative or repeated paths: refused.
        let e = Settings::new(std::slice::from_ref(&a), vec![])
            .err()
            .unwrap();
        assert!(e.contains("never stored unencrypted"), "{e}");
        assert!(
            Settings::new(
                &["etc/x".into()],
                vec![age::x25519::Identity::generate().to_public()]
            )
            .is_err()
        );
        assert!(
            Settings::new(
                &[a.clone(), a.clone()],
                vec![age::x25519::Identity::generate().to_public()]
            )
            .is_err()
        );
        for p in ["/a/../b", "/a//b", "/", "/a/./b", "rel", "/a\nb"] {
            assert!(check_bundle_path(p).is_err(), "{p}");
        }
    }
}
