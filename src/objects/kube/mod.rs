//! Kubernetes' values in etcd: the storage envelope and `ObjectMeta` ([`meta`]), over
//! a minimal protobuf reader ([`protobuf`]), and encryption at rest ([`at_rest`]).
//! Every function here takes bytes from a backup, which may hold anything: it returns
//! an error for that one value and never panics.

pub mod at_rest;
pub mod meta;
mod protobuf;

pub use at_rest::{Encryption, Keyring, KeyringError};
pub use meta::{ObjectMeta, Owner};

/// What one value is: how it is encrypted, if it is, and its type and metadata or why
/// they cannot be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    pub encryption: Option<Encryption>,
    pub object: Result<ObjectMeta, String>,
}

/// Reads the value stored under etcd key `key`, decrypting it with `keyring` when it is
/// encrypted at rest.
pub fn inspect(key: &[u8], value: &[u8], keyring: Option<&Keyring>) -> Inspected {
    match at_rest::parse(value) {
        None => Inspected {
            encryption: None,
            object: meta::decode(value),
        },
        Some(Err(e)) => Inspected {
            encryption: None,
            object: Err(e),
        },
        Some(Ok((enc, data))) => {
            let object = match keyring {
                _ if enc.provider.starts_with("kms") => Err(format!(
                    "encrypted at rest through the KMS plugin {:?} ({}): only that plugin \
                     can decrypt it, lifeboat cannot",
                    enc.key, enc.provider
                )),
                None => Err(format!(
                    "encrypted at rest ({} key {:?}): give the apiserver's \
                     EncryptionConfiguration with --encryption-config to read it",
                    enc.provider, enc.key
                )),
                Some(ring) => ring
                    .decrypt(&enc, data, key)
                    .and_then(|plain| meta::decode(&plain)),
            };
            Inspected {
                encryption: Some(enc),
                object,
            }
        }
    }
}
