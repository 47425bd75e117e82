//! The vault's root keys. They come from outside the database — a key file or a
//! command named by `spine.vault_key_file` / `spine.vault_key_command`
//! (postgresql.conf, superuser-only) — and are kept in the backend's memory only.
//! No SQL function returns them and no message contains them.
//!
//! Format (file or command output), one key per line, comments with `#`:
//!
//! ```text
//! # version:64 hex digits (32 bytes). The highest version encrypts new secrets;
//! # older versions stay to decrypt until spine.rotate_vault_key() moved every
//! # secret off them.
//! 1:5b1f…
//! 2:c07e…
//! ```

use crate::error::SpineError;
use crate::gucs;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::rc::Rc;
use std::time::SystemTime;

/// One 256-bit root key. Debug never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct RootKey(pub [u8; 32]);

impl fmt::Debug for RootKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RootKey(…)")
    }
}

/// All key versions of the keyring.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keyring {
    keys: BTreeMap<i32, RootKey>,
}

impl Keyring {
    /// Parses the key file format. Errors name the line, never its content.
    pub fn parse(text: &str) -> Result<Keyring, String> {
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let lineno = n + 1;
            let (version, hex_key) = line
                .split_once(':')
                .ok_or_else(|| format!("line {lineno}: expected <version>:<64 hex digits>"))?;
            let version: i32 = version
                .trim()
                .parse()
                .ok()
                .filter(|v| *v > 0)
                .ok_or_else(|| format!("line {lineno}: the version must be a positive integer"))?;
            let bytes = hex::decode(hex_key.trim())
                .ok()
                .filter(|b| b.len() == 32)
                .ok_or_else(|| {
                    format!("line {lineno}: the key must be 64 hex digits (32 bytes)")
                })?;
            let key = RootKey(bytes.try_into().expect("length checked"));
            if keys.insert(version, key).is_some() {
                return Err(format!("line {lineno}: version {version} appears twice"));
            }
        }
        if keys.is_empty() {
            return Err("it holds no key".into());
        }
        Ok(Keyring { keys })
    }

    /// The version and key that encrypt new secrets: the highest version.
    pub fn current(&self) -> (i32, &RootKey) {
        let (v, k) = self
            .keys
            .last_key_value()
            .expect("a keyring is never empty");
        (*v, k)
    }

    pub fn get(&self, version: i32) -> Option<&RootKey> {
        self.keys.get(&version)
    }

    pub fn versions(&self) -> Vec<i32> {
        self.keys.keys().copied().collect()
    }
}

/// Where the keys were read from, to know when to read them again.
#[derive(PartialEq, Eq)]
enum Origin {
    File {
        path: String,
        modified: Option<SystemTime>,
        len: u64,
    },
    Command(String),
}

struct Loaded {
    origin: Origin,
    keyring: Rc<Keyring>,
}

// A backend is one thread: the keyring is cached per backend and re-read when the
// key file changes (a rotation adds a line) or a needed version is missing.
thread_local! {
    static LOADED: RefCell<Option<Loaded>> = const { RefCell::new(None) };
}

fn unavailable(reason: String) -> SpineError {
    SpineError::Unavailable(format!("the vault's root key is not available: {reason}"))
}

/// The configured source, and for a file its current stamp.
fn current_origin() -> Result<Origin, SpineError> {
    if let Some(path) = gucs::vault_key_file() {
        let meta = std::fs::metadata(&path)
            .map_err(|e| unavailable(format!("spine.vault_key_file \"{path}\": {e}")))?;
        return Ok(Origin::File {
            path,
            modified: meta.modified().ok(),
            len: meta.len(),
        });
    }
    if let Some(command) = gucs::vault_key_command() {
        return Ok(Origin::Command(command));
    }
    Err(unavailable(
        "set spine.vault_key_file (or spine.vault_key_command) in postgresql.conf".into(),
    ))
}

fn read(origin: &Origin) -> Result<Keyring, SpineError> {
    let (what, text) = match origin {
        Origin::File { path, .. } => (
            format!("spine.vault_key_file \"{path}\""),
            std::fs::read_to_string(path)
                .map_err(|e| unavailable(format!("spine.vault_key_file \"{path}\": {e}")))?,
        ),
        Origin::Command(command) => {
            let out = std::process::Command::new("/bin/sh")
                .arg("-c")
                .arg(command)
                .output()
                .map_err(|e| unavailable(format!("spine.vault_key_command: {e}")))?;
            if !out.status.success() {
                return Err(unavailable(format!(
                    "spine.vault_key_command exited with {}",
                    out.status
                )));
            }
            (
                "spine.vault_key_command's output".to_string(),
                String::from_utf8(out.stdout)
                    .map_err(|_| unavailable("spine.vault_key_command printed non-UTF-8".into()))?,
            )
        }
    };
    Keyring::parse(&text).map_err(|reason| unavailable(format!("{what}: {reason}")))
}

/// The keyring, read again when its file changed (or, with `force`, always).
pub fn keyring(force: bool) -> Result<Rc<Keyring>, SpineError> {
    let origin = current_origin()?;
    LOADED.with(|cell| {
        let mut loaded = cell.borrow_mut();
        if let Some(l) = loaded.as_ref() {
            if !force && l.origin == origin {
                return Ok(l.keyring.clone());
            }
        }
        let keyring = Rc::new(read(&origin)?);
        *loaded = Some(Loaded {
            origin,
            keyring: keyring.clone(),
        });
        Ok(keyring)
    })
}

/// The key of `version`, reading the keys again once if this backend does not
/// have it yet (another session may have started a rotation).
pub fn key_of(version: i32) -> Result<RootKey, SpineError> {
    if let Some(k) = keyring(false)?.get(version) {
        return Ok(k.clone());
    }
    keyring(true)?.get(version).cloned().ok_or_else(|| {
        unavailable(format!(
            "key version {version} is not in the keyring; it must stay until spine.rotate_vault_key() has moved every secret off it"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const K1: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn highest_version_is_current() {
        let ring = Keyring::parse(&format!("# keys\n1:{K1}\n\n3:{}\n", "ab".repeat(32))).unwrap();
        assert_eq!(ring.current().0, 3);
        assert_eq!(ring.current().1 .0, [0xab; 32]);
        assert_eq!(ring.get(1).unwrap().0[31], 0x1f);
        assert!(ring.get(2).is_none());
        assert_eq!(ring.versions(), vec![1, 3]);
    }

    #[test]
    fn errors_name_the_line_not_the_key() {
        for (text, expected) in [
            ("", "no key"),
            ("# only a comment", "no key"),
            ("nonsense", "line 1: expected"),
            (&format!("0:{K1}"), "positive"),
            ("1:abcd", "64 hex digits"),
            (&format!("1:{K1}\n1:{K1}"), "twice"),
        ] {
            let err = Keyring::parse(text).unwrap_err();
            assert!(err.contains(expected), "{text}: {err}");
            assert!(!err.contains(K1), "the key leaked into: {err}");
        }
        assert_eq!(
            format!("{:?}", Keyring::parse(&format!("1:{K1}")).unwrap()),
            "Keyring { keys: {1: RootKey(…)} }"
        );
    }
}
