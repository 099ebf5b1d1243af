//! What may reach a path or a shell. Backup ids come from manifests in the bucket
//! (untrusted: whoever can write there could plant `"id": "x;reboot;"` or `../../etc`),
//! member names, data dirs, users and hosts from the config. Each is checked here where
//! it is used, whatever was checked before (defence in depth): a refusal names the value
//! and what is allowed; [`file_word`] makes any text safe as part of a file name.

use std::path::{Component, Path, PathBuf};

/// Characters allowed in a word that becomes part of a file name or an ssh argument.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// `text` as a safe part of a file name: letters, digits, `.`, `_`, `-`, never starting
/// with `.` or `-`, never `/`, `..` or a control character; anything else becomes `_`.
/// Already safe words (every valid backup id and member name) come back unchanged.
pub fn file_word(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if plain(c) { c } else { '_' })
        .collect();
    while out.contains("..") {
        out = out.replace("..", "._");
    }
    if out.is_empty() || out.starts_with(['.', '-']) {
        out.insert(0, '_');
    }
    out
}

/// A word that must be used as it is (a backup id from a manifest, a member name):
/// refused unless [`file_word`] would leave it unchanged.
pub fn check_word(what: &str, text: &str) -> Result<(), String> {
    if file_word(text) == text {
        return Ok(());
    }
    Err(format!(
        "{what} {text:?} is refused: only letters, digits, '.', '_' and '-' are allowed (not \
         first, no \"..\"), since it becomes part of file names and commands"
    ))
}

/// A backup id read from storage: the characters of the id grammar
/// `YYYYMMDDTHHMMSS.mmmZ-xxxxxxxx` and nothing that could leave a directory or reach a
/// shell.
pub fn check_backup_id(id: &str) -> Result<(), String> {
    check_word("backup id", id).map_err(|e| {
        format!("{e}; the manifest in the storage is not one lifeboat wrote: do not use it")
    })
}

/// A member's data dir: absolute, below `/`, without `..`, spaces at either end or
/// control characters. `.` parts, doubled and trailing slashes are dropped, so
/// `/var/lib/etcd/` is `/var/lib/etcd` and the new directory lands beside it, not
/// inside.
pub fn data_dir(path: &Path) -> Result<PathBuf, String> {
    let text = path.to_str().ok_or("data-dir is not UTF-8")?;
    if text.chars().any(char::is_control) {
        return Err(format!("data-dir {text:?} holds a control character"));
    }
    if text.trim() != text {
        return Err(format!(
            "data-dir {text:?} starts or ends with a space: write the path exactly"
        ));
    }
    if !path.is_absolute() {
        return Err(format!("data-dir {text:?} must be an absolute path"));
    }
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir | Component::Prefix(_) => {
                return Err(format!(
                    "data-dir {text:?} holds \"..\": write the path without it"
                ));
            }
        }
    }
    if out.parent().is_none() {
        return Err(format!("data-dir {text:?} must be below /, not / itself"));
    }
    Ok(out)
}

/// An ssh user or host name: no leading `-` (ssh would take it for an option), no
/// whitespace, control or shell characters.
pub fn check_ssh_word(what: &str, text: &str) -> Result<(), String> {
    let ok = !text.is_empty()
        && !text.starts_with('-')
        && text
            .chars()
            .all(|c| plain(c) || (what == "host" && c == ':'));
    if ok {
        return Ok(());
    }
    Err(format!(
        "ssh {what} {text:?} is refused: use letters, digits, '.', '_' and '-' (not first){}",
        if what == "host" {
            ", or an IPv6 address in []"
        } else {
            ""
        }
    ))
}

/// A value handed to a command as one word (URL, token, path): no control characters,
/// which no shell quoting makes visible in the printed plan.
pub fn check_printable(what: &str, text: &str) -> Result<(), String> {
    if text.chars().any(char::is_control) {
        return Err(format!("{what} {text:?} holds a control character"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_words_become_plain_file_names() {
        for (hostile, safe) in [
            ("x;reboot;", "x_reboot_"),
            ("$(touch pwned)", "__touch_pwned_"),
            ("../../etc/passwd", "_.__.__etc_passwd"),
            ("..", "_._"),
            ("-rf", "_-rf"),
            (".hidden", "_.hidden"),
            ("", "_"),
            ("a\nb", "a_b"),
            ("it's a snapshot", "it_s_a_snapshot"),
            (
                "20261122T054700.123Z-8e4e0ddc",
                "20261122T054700.123Z-8e4e0ddc",
            ),
        ] {
            let w = file_word(hostile);
            assert_eq!(w, safe, "{hostile:?}");
            assert!(!w.contains('/') && !w.contains("..") && !w.starts_with(['.', '-']));
        }
        assert!(check_backup_id("20261122T054700.123Z-8e4e0ddc").is_ok());
        for bad in [
            "x;reboot;",
            "$(id)",
            "../x",
            "a/b",
            "-x",
            "..",
            "a..b",
            "a b",
        ] {
            let e = check_backup_id(bad).unwrap_err();
            assert!(
                e.contains(&format!("{bad:?}")) && e.contains("refused"),
                "{e}"
            );
        }
    }

    #[test]
    fn data_dirs_are_absolute_and_normalised() {
        let ok = |p: &str| data_dir(Path::new(p)).unwrap();
        assert_eq!(ok("/var/lib/etcd/"), Path::new("/var/lib/etcd"));
        assert_eq!(ok("/var//lib/./etcd//"), Path::new("/var/lib/etcd"));
        assert_eq!(ok("/srv/my 'etcd' data"), Path::new("/srv/my 'etcd' data"));
        for (bad, why) in [
            ("var/lib/etcd", "absolute"),
            ("/", "below /"),
            ("//", "below /"),
            ("/var/../etc", "\"..\""),
            ("/var/lib/etcd\n", "control"),
            (" /var/lib/etcd", "space"),
        ] {
            let e = data_dir(Path::new(bad)).unwrap_err();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn ssh_users_and_hosts_cannot_be_options_or_shell() {
        assert!(check_ssh_word("host", "cp-1.example.org").is_ok());
        assert!(check_ssh_word("host", "fe80::1").is_ok());
        assert!(check_ssh_word("user", "root").is_ok());
        for bad in [
            "-oProxyCommand=sh",
            "a b",
            "a;b",
            "$(id)",
            "a`b`",
            "",
            "a\tb",
        ] {
            assert!(check_ssh_word("host", bad).is_err(), "{bad:?}");
            assert!(check_ssh_word("user", bad).is_err(), "{bad:?}");
        }
        assert!(check_ssh_word("user", "a:b").is_err());
    }
}
