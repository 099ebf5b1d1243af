//! Values the apiserver encrypted at rest, and how to read them back offline with its
//! `EncryptionConfiguration` file.
//!
//! An encrypted value is `k8s:enc:<provider>:v1:<key name>:` followed by the provider's
//! bytes (`k8s.io/apiserver/pkg/storage/value`, prefix transformers;
//! `.../value/encrypt/aes` and `.../secretbox`):
//!
//! | provider  | after the prefix                       | authenticated data |
//! |-----------|----------------------------------------|--------------------|
//! | aescbc    | IV (16) ‖ AES-CBC, PKCS#7 padding      | none               |
//! | aesgcm    | nonce (12) ‖ AES-GCM ciphertext ‖ tag  | the etcd key       |
//! | secretbox | nonce (24) ‖ tag ‖ XSalsa20 ciphertext | none               |
//! | kms       | v1: DEK-wrapped; v2: `EncryptedObject` | needs the plugin   |
//!
//! KMS values cannot be read offline: they are listed with their provider and name.

use std::path::{Path, PathBuf};

use base64::Engine;

/// `k8s:enc:`: every value a provider other than identity wrote starts with it.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";

/// How a value is encrypted, read from its prefix.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Encryption {
    /// `aescbc`, `aesgcm`, `secretbox`, `kms` (v1) or `kms v2`.
    pub provider: String,
    /// The key's name (KMS: the plugin's name).
    pub key: String,
}

/// Splits an encrypted value into its encryption and the provider's bytes; `None` for a
/// value that is not encrypted. A value that starts like one but is cut short is an
/// error.
pub fn parse(value: &[u8]) -> Option<Result<(Encryption, &[u8]), String>> {
    let rest = value.strip_prefix(ENCRYPTED_PREFIX)?;
    let mut parts = rest.splitn(4, |&b| b == b':');
    let (Some(provider), Some(version), Some(name), Some(data)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Some(Err(
            "starts with k8s:enc: but has no provider, version and key name".into(),
        ));
    };
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let provider = match (provider, version) {
        (p, b"v1") => text(p),
        (b"kms", b"v2") => "kms v2".to_owned(),
        (p, v) => {
            return Some(Err(format!(
                "encrypted by {} {}, which lifeboat does not know",
                text(p),
                text(v)
            )));
        }
    };
    Some(Ok((
        Encryption {
            provider,
            key: text(name),
        },
        data,
    )))
}

/// The keys of an `EncryptionConfiguration` file.
#[derive(Debug)]
pub struct Keyring {
    path: PathBuf,
    keys: Vec<Key>,
}

#[derive(Debug)]
struct Key {
    provider: Provider,
    name: String,
    secret: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Aescbc,
    Aesgcm,
    Secretbox,
}

impl Provider {
    fn name(self) -> &'static str {
        match self {
            Provider::Aescbc => "aescbc",
            Provider::Aesgcm => "aesgcm",
            Provider::Secretbox => "secretbox",
        }
    }
}

/// Why an `EncryptionConfiguration` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("encryption config {path}: {reason}")]
pub struct KeyringError {
    pub path: PathBuf,
    pub reason: String,
}

impl Keyring {
    /// Reads the apiserver's `--encryption-provider-config` file (YAML or JSON).
    pub fn load(path: &Path) -> Result<Keyring, KeyringError> {
        let fail = |reason: String| KeyringError {
            path: path.to_path_buf(),
            reason,
        };
        let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
        let keys = parse_config(&text).map_err(fail)?;
        Ok(Keyring {
            path: path.to_path_buf(),
            keys,
        })
    }

    /// The plaintext of a value encrypted as `enc` (the provider's bytes `data`) under
    /// etcd key `key`, or why not.
    pub fn decrypt(&self, enc: &Encryption, data: &[u8], key: &[u8]) -> Result<Vec<u8>, String> {
        let provider = match enc.provider.as_str() {
            "aescbc" => Provider::Aescbc,
            "aesgcm" => Provider::Aesgcm,
            "secretbox" => Provider::Secretbox,
            p => {
                return Err(format!(
                    "encrypted by {p} (key {:?}), which lifeboat cannot decrypt",
                    enc.key
                ));
            }
        };
        let candidates: Vec<&Key> = self
            .keys
            .iter()
            .filter(|k| k.provider == provider && k.name == enc.key)
            .collect();
        if candidates.is_empty() {
            return Err(format!(
                "encrypted with {} key {:?}, which {} does not have",
                provider.name(),
                enc.key,
                self.path.display()
            ));
        }
        let mut last = String::new();
        for k in candidates {
            match decrypt_with(provider, &k.secret, data, key) {
                Ok(plain) => return Ok(plain),
                Err(e) => last = e,
            }
        }
        Err(format!(
            "{} key {:?} of {} does not decrypt it ({last}): wrong key?",
            provider.name(),
            enc.key,
            self.path.display()
        ))
    }
}

fn decrypt_with(p: Provider, secret: &[u8], data: &[u8], key: &[u8]) -> Result<Vec<u8>, String> {
    match p {
        Provider::Aescbc => aescbc(secret, data),
        Provider::Aesgcm => aesgcm(secret, data, key),
        Provider::Secretbox => secretbox(secret, data),
    }
}

fn aescbc(secret: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    use cbc::cipher::{BlockDecryptMut, KeyIvInit, block_padding::Pkcs7};
    if data.len() < 32 || !data.len().is_multiple_of(16) {
        return Err(format!(
            "{} bytes is not an IV and whole AES blocks",
            data.len()
        ));
    }
    let (iv, ct) = data.split_at(16);
    let bad = |_| "the padding is wrong".to_owned();
    let plain = match secret.len() {
        16 => cbc::Decryptor::<aes::Aes128>::new_from_slices(secret, iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(bad)?,
        24 => cbc::Decryptor::<aes::Aes192>::new_from_slices(secret, iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(bad)?,
        32 => cbc::Decryptor::<aes::Aes256>::new_from_slices(secret, iv)
            .map_err(|e| e.to_string())?
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(bad)?,
        n => return Err(format!("an AES key of {n} bytes")),
    };
    // CBC has no authentication: a wrong key usually breaks the padding, else it
    // yields noise, which is no Kubernetes object.
    if plain.starts_with(super::meta::PROTOBUF_PREFIX) || plain.first() == Some(&b'{') {
        Ok(plain)
    } else {
        Err("the plaintext is not a Kubernetes object".into())
    }
}

fn aesgcm(secret: &[u8], data: &[u8], key: &[u8]) -> Result<Vec<u8>, String> {
    use aes_gcm::aead::{Aead, KeyInit, Payload};
    use aes_gcm::{AesGcm, Nonce};
    if data.len() < 12 + 16 {
        return Err(format!(
            "{} bytes is shorter than a nonce and a tag",
            data.len()
        ));
    }
    let (nonce, ct) = data.split_at(12);
    let payload = Payload { msg: ct, aad: key };
    let nonce = Nonce::from_slice(nonce);
    let failed = |_| "authentication failed".to_owned();
    match secret.len() {
        16 => AesGcm::<aes::Aes128, aes_gcm::aead::consts::U12>::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .decrypt(nonce, payload)
            .map_err(failed),
        24 => AesGcm::<aes::Aes192, aes_gcm::aead::consts::U12>::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .decrypt(nonce, payload)
            .map_err(failed),
        32 => AesGcm::<aes::Aes256, aes_gcm::aead::consts::U12>::new_from_slice(secret)
            .map_err(|e| e.to_string())?
            .decrypt(nonce, payload)
            .map_err(failed),
        n => Err(format!("an AES key of {n} bytes")),
    }
}

fn secretbox(secret: &[u8], data: &[u8]) -> Result<Vec<u8>, String> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    use crypto_secretbox::{Nonce, XSalsa20Poly1305};
    if data.len() < 24 + 16 {
        return Err(format!(
            "{} bytes is shorter than a nonce and a tag",
            data.len()
        ));
    }
    let cipher = XSalsa20Poly1305::new_from_slice(secret)
        .map_err(|_| format!("a secretbox key of {} bytes, not 32", secret.len()))?;
    let (nonce, ct) = data.split_at(24);
    cipher
        .decrypt(Nonce::from_slice(nonce), ct)
        .map_err(|_| "authentication failed".to_owned())
}

/// The aescbc, aesgcm and secretbox keys of an `EncryptionConfiguration`.
fn parse_config(text: &str) -> Result<Vec<Key>, String> {
    use yaml_rust2::{Yaml, YamlLoader};
    let docs = YamlLoader::load_from_str(text).map_err(|e| format!("not YAML: {e}"))?;
    let doc = docs.first().ok_or("the file is empty")?;
    let kind = doc["kind"].as_str().unwrap_or("");
    if kind != "EncryptionConfiguration" {
        return Err(format!(
            "kind is {kind:?}, not EncryptionConfiguration (the file kube-apiserver's \
             --encryption-provider-config names)"
        ));
    }
    let entries = doc["resources"].as_vec().ok_or("no resources list")?;
    let mut keys = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let providers = entry["providers"]
            .as_vec()
            .ok_or_else(|| format!("resources[{i}] has no providers list"))?;
        for (j, p) in providers.iter().enumerate() {
            let Yaml::Hash(h) = p else {
                return Err(format!("resources[{i}].providers[{j}] is not a mapping"));
            };
            for (name, body) in h {
                let provider = match name.as_str() {
                    Some("aescbc") => Provider::Aescbc,
                    Some("aesgcm") => Provider::Aesgcm,
                    Some("secretbox") => Provider::Secretbox,
                    _ => continue,
                };
                let list = body["keys"].as_vec().ok_or_else(|| {
                    format!(
                        "resources[{i}].providers[{j}].{} has no keys list",
                        provider.name()
                    )
                })?;
                for (k, key) in list.iter().enumerate() {
                    let at = format!(
                        "resources[{i}].providers[{j}].{}.keys[{k}]",
                        provider.name()
                    );
                    let name = key["name"]
                        .as_str()
                        .ok_or_else(|| format!("{at} has no name"))?;
                    let secret = key["secret"]
                        .as_str()
                        .ok_or_else(|| format!("{at} ({name}) has no secret"))?;
                    // Never the secret itself in a message.
                    let secret = base64::engine::general_purpose::STANDARD
                        .decode(secret.trim())
                        .map_err(|_| format!("{at} ({name}): the secret is not base64"))?;
                    keys.push(Key {
                        provider,
                        name: name.to_owned(),
                        secret,
                    });
                }
            }
        }
    }
    Ok(keys)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_parsed() {
        let (e, data) = parse(b"k8s:enc:aesgcm:v1:key1:\x01\x02").unwrap().unwrap();
        assert_eq!(
            (e.provider.as_str(), e.key.as_str(), data),
            ("aesgcm", "key1", &[1u8, 2][..])
        );
        let (e, _) = parse(b"k8s:enc:kms:v2:vault:xyz").unwrap().unwrap();
        assert_eq!(e.provider, "kms v2");
        assert!(parse(b"k8s:enc:aesgcm").unwrap().is_err());
        assert!(parse(b"k8s\x00abc").is_none());
    }

    #[test]
    fn config_files_are_read_and_bad_ones_named() {
        let good = "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n  - resources: [secrets]\n    providers:\n      - aesgcm:\n          keys:\n            - name: k1\n              secret: AAAAAAAAAAAAAAAAAAAAAA==\n      - identity: {}\n";
        let keys = parse_config(good).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].secret.len(), 16);
        assert!(parse_config("kind: Pod\n").unwrap_err().contains("Pod"));
        let bad = good.replace("AAAAAAAAAAAAAAAAAAAAAA==", "not*base64");
        let e = parse_config(&bad).unwrap_err();
        assert!(e.contains("not base64") && !e.contains("not*base64"), "{e}");
    }
}
