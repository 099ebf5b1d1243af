//! Encryption of stored backups with age (<https://age-encryption.org>): objects are
//! encrypted to one or more X25519 recipients (`age1…`), so the stock `age -d -i KEY`
//! decrypts them, and decrypted by `verify`/`fetch` with an identity file.
//!
//! A snapshot holds every Kubernetes Secret in the clear; encrypting backups means the
//! storage never sees them.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use age::x25519;

#[derive(Debug, thiserror::Error)]
pub enum EncryptionError {
    #[error("recipient {recipient:?} is not an age X25519 recipient (age1...): {reason}")]
    Recipient { recipient: String, reason: String },
    #[error("identity file {path}: {reason}")]
    Identity { path: PathBuf, reason: String },
}

/// Parses `age1…` recipients.
pub fn parse_recipients(list: &[String]) -> Result<Vec<x25519::Recipient>, EncryptionError> {
    list.iter()
        .map(|r| {
            x25519::Recipient::from_str(r.trim()).map_err(|e| EncryptionError::Recipient {
                recipient: r.clone(),
                reason: e.to_string(),
            })
        })
        .collect()
}

/// The identities (private keys) in an age identity file, as `age-keygen` writes it.
pub type Identities = Vec<Box<dyn age::Identity + Send + Sync>>;

pub fn load_identities(path: &Path) -> Result<Identities, EncryptionError> {
    let err = |reason: String| EncryptionError::Identity {
        path: path.to_path_buf(),
        reason,
    };
    let file = age::IdentityFile::from_file(path.to_string_lossy().into_owned())
        .map_err(|e| err(e.to_string()))?;
    let ids = file.into_identities().map_err(|e| err(e.to_string()))?;
    if ids.is_empty() {
        return Err(err("holds no identity (AGE-SECRET-KEY-1...)".into()));
    }
    Ok(ids)
}

/// Where compressed bytes go: straight through, or through an age stream.
pub enum Sink<W: Write> {
    Plain(W),
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sink<W> {
    /// Wraps `inner` in an age stream when there are recipients.
    pub fn new(inner: W, recipients: &[x25519::Recipient]) -> io::Result<Self> {
        if recipients.is_empty() {
            return Ok(Sink::Plain(inner));
        }
        let encryptor =
            age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
                .map_err(io::Error::other)?;
        Ok(Sink::Age(encryptor.wrap_output(inner)?))
    }

    /// Ends the age stream (its last chunk and tag) and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Sink::Plain(w) => Ok(w),
            Sink::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Age(w) => w.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Age(w) => w.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn round_trip_and_bad_recipients() {
        let id = x25519::Identity::generate();
        let recipients = parse_recipients(&[id.to_public().to_string()]).unwrap();
        let mut sink = Sink::new(Vec::new(), &recipients).unwrap();
        sink.write_all(b"snapshot bytes").unwrap();
        let encrypted = sink.finish().unwrap();
        assert!(encrypted.starts_with(b"age-encryption.org/v1"));
        let decryptor = age::Decryptor::new(&encrypted[..]).unwrap();
        let mut out = Vec::new();
        decryptor
            .decrypt(std::iter::once(&id as &dyn age::Identity))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, b"snapshot bytes");
        assert!(parse_recipients(&["age1notakey".into()]).is_err());
        let plain = Sink::new(Vec::new(), &[]).unwrap();
        assert!(matches!(plain, Sink::Plain(_)));
    }
}
