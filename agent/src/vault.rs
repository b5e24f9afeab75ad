//! The local vault: secrets kept on the managed host, referenced from operation
//! parameters as `vault://local/NAME` and resolved by the agent just before a task
//! runs, so the control plane never sees them.
//!
//! The file (default [`DEFAULT_VAULT`]) is TOML with one string per name:
//!
//! ```toml
//! DB_PASSWORD = "correct horse battery staple"
//! backup.s3-key = "AKIA..."        # a dotted key: the name is `backup.s3-key`
//! ```
//!
//! Names match `[A-Za-z0-9_.-]{1,64}` (tables and dotted keys are joined with `.`);
//! values are strings of at most [`MAX_VALUE_LEN`] bytes. A value shorter than
//! [`MIN_SECRET_LEN`] bytes is accepted but not redacted from task output; loading
//! warns about it by name.
//!
//! Invariants: a loaded vault came from a regular file (not a symbolic link, FIFO
//! or device) owned by the agent's effective uid and not accessible to group or
//! others; otherwise loading fails with an error naming the path and the problem.
//! A missing file is an empty vault. No error message, `Debug` output or log line
//! carries a value: parse errors give a line number, never the line. Values are
//! held in [`Zeroizing`] strings and resolved strings are too.
//!
//! Past this module a local user other than the agent's (and root) cannot read or
//! replace the vault through this file. It does not defend against root, against
//! someone who can write the directories above the file, or against a task that
//! was handed a secret and prints it in a disguised form (see [`crate::redact`]).
//! Zeroization is best effort: the TOML parser's transient copies are not wiped.

use crate::redact::{Redactor, MIN_SECRET_LEN};
use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;
use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Where the agent looks for its vault.
pub const DEFAULT_VAULT: &str = "/etc/pilothouse/vault.toml";
/// The prefix of a reference to a local vault entry.
pub const REFERENCE_PREFIX: &str = "vault://local/";
/// Any reference begins with this; only [`REFERENCE_PREFIX`] is resolvable.
const SCHEME: &str = "vault://";
/// A control-plane secret (Settings -> Secrets): `secret://NAME`, resolved
/// from the values delivered sealed with the operation ([`Vault::deliver`]).
pub use channel::ops::SECRET_REF;
/// Longest entry name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest value, in bytes (a PEM private key fits comfortably).
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Largest vault file, in bytes.
pub const MAX_FILE_LEN: u64 = 1024 * 1024;

/// Why the vault could not be loaded or a reference not resolved. Messages name
/// paths and entry names, never values.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error("cannot read the vault file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the vault file {path} is a symbolic link; it must be a regular file")]
    Symlink { path: PathBuf },
    #[error("the vault file {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "the vault file {path} is accessible to group or others (mode {mode:04o}); the agent \
         refuses to use it: run `chmod 600 {path}` after checking who changed it"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "the vault file {path} is owned by uid {owner}, not by the agent's uid {expected}; \
         the agent refuses to use it"
    )]
    Owner {
        path: PathBuf,
        owner: u32,
        expected: u32,
    },
    #[error("the vault file {path} is larger than {MAX_FILE_LEN} bytes")]
    TooLarge { path: PathBuf },
    #[error("the vault file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
    #[error("{reference} is not in the local vault")]
    UnknownReference { reference: String },
    #[error("`{reference}` is not a valid vault reference: {reason}")]
    BadReference {
        reference: String,
        reason: &'static str,
    },
    #[error(
        "secret://{name} did not come with this operation: set {name} in Settings -> Secrets \
         on the dashboard, for this server or the whole organisation"
    )]
    NotDelivered { name: String },
}

/// The loaded vault, and the control-plane secrets delivered with the
/// operation at hand. `Debug` lists names only.
#[derive(Default)]
pub struct Vault {
    entries: BTreeMap<String, Zeroizing<String>>,
    delivered: BTreeMap<String, Zeroizing<String>>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Vault")
            .field("names", &self.entries.keys().collect::<Vec<_>>())
            .field("delivered", &self.delivered.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The names of the control-plane secrets `s` refers to (`secret://NAME`),
/// or the first reference whose name is not a secret's name.
pub fn secret_names(s: &str) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let mut rest = s;
    while let Some(at) = rest.find(SECRET_REF) {
        let tail = &rest[at + SECRET_REF.len()..];
        let n = tail.bytes().take_while(|&b| is_secret_byte(b)).count();
        channel::ops::check_secret_name(&tail[..n])
            .map_err(|e| format!("`{}`: {}", excerpt(&rest[at..]), e.message))?;
        names.push(tail[..n].to_string());
        rest = &tail[n..];
    }
    Ok(names)
}

fn is_secret_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

impl Vault {
    /// Loads the vault at `path` after checking the file (see the module doc).
    pub fn load(path: &Path) -> Result<Self, VaultError> {
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC;
        // NOFOLLOW refuses a symbolic link; NONBLOCK keeps a FIFO from blocking the
        // open. Every check below is on the opened file, so it cannot be swapped.
        let file = match rustix::fs::open(path, flags | OFlags::NOCTTY, Mode::empty()) {
            Ok(fd) => File::from(fd),
            Err(Errno::NOENT) => return Ok(Self::default()),
            Err(Errno::LOOP) => return Err(VaultError::Symlink { path: path.into() }),
            Err(e) => {
                return Err(VaultError::Read {
                    path: path.into(),
                    source: e.into(),
                })
            }
        };
        let read_error = |source| VaultError::Read {
            path: path.into(),
            source,
        };
        let meta = file.metadata().map_err(read_error)?;
        if !meta.file_type().is_file() {
            return Err(VaultError::NotAFile { path: path.into() });
        }
        let mode = meta.mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(VaultError::Permissions {
                path: path.into(),
                mode,
            });
        }
        let expected = rustix::process::geteuid().as_raw();
        if meta.uid() != expected {
            return Err(VaultError::Owner {
                path: path.into(),
                owner: meta.uid(),
                expected,
            });
        }
        if meta.len() > MAX_FILE_LEN {
            return Err(VaultError::TooLarge { path: path.into() });
        }
        // Sized up front so the buffer holding the secrets is not reallocated (a
        // reallocation would leave an unzeroized copy behind) unless the file grows.
        let capacity = usize::try_from(meta.len()).map_or(0, |n| n + 1);
        let mut text = Zeroizing::new(String::with_capacity(capacity));
        file.take(MAX_FILE_LEN + 1)
            .read_to_string(&mut text)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => VaultError::Invalid {
                    path: path.into(),
                    reason: "it is not UTF-8".into(),
                },
                _ => read_error(e),
            })?;
        if text.len() as u64 > MAX_FILE_LEN {
            return Err(VaultError::TooLarge { path: path.into() });
        }
        Self::parse(&text, path)
    }

    /// Parses the vault text (`path` is only named in errors).
    fn parse(text: &str, path: &Path) -> Result<Self, VaultError> {
        let invalid = |reason: String| VaultError::Invalid {
            path: path.into(),
            reason,
        };
        // The parser's message can quote the offending text, which may be a value:
        // only the position is reported.
        let table: toml::Table = toml::from_str(text).map_err(|e| {
            invalid(match e.span() {
                Some(span) => format!(
                    "TOML syntax error on line {} (the line is not shown, it may hold a secret)",
                    line_of(text, span.start)
                ),
                None => "TOML syntax error".into(),
            })
        })?;
        let mut entries = BTreeMap::new();
        flatten(table, None, &mut entries).map_err(invalid)?;
        for (name, value) in &entries {
            if value.len() < MIN_SECRET_LEN {
                tracing::warn!(
                    name = %name,
                    "vault entry is shorter than {MIN_SECRET_LEN} bytes and will not be redacted from task output"
                );
            }
        }
        Ok(Self {
            entries,
            delivered: BTreeMap::new(),
        })
    }

    /// How many entries the vault holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// Takes the control-plane secrets delivered with an operation, for its
    /// `secret://NAME` references and for redaction.
    pub fn deliver(&mut self, secrets: BTreeMap<String, Zeroizing<String>>) {
        self.delivered = secrets;
    }

    /// Replaces every `vault://local/NAME` in `s` with the value of NAME, and
    /// every `secret://NAME` with the delivered secret NAME. The name is the
    /// longest run of name characters after the prefix. Any other `vault://`
    /// reference, an empty or too long name, or an unknown name is an error
    /// naming the reference. Values are not scanned again.
    pub fn resolve(&self, s: &str) -> Result<Zeroizing<String>, VaultError> {
        // Two passes: the first checks every reference and sizes the result, so
        // the string holding the values is allocated once and never reallocated.
        let mut len = 0;
        self.pieces(s, |piece| len += piece.len())?;
        let mut out = Zeroizing::new(String::with_capacity(len));
        self.pieces(s, |piece| out.push_str(piece))?;
        Ok(out)
    }

    /// Calls `f` with the pieces of `s` resolved: literal text and values, in order.
    fn pieces<'a>(&'a self, s: &'a str, mut f: impl FnMut(&str)) -> Result<(), VaultError> {
        let mut rest = s;
        while let Some(at) = next_reference(rest) {
            f(&rest[..at]);
            let reference = &rest[at..];
            if let Some(tail) = reference.strip_prefix(SECRET_REF) {
                let n = tail.bytes().take_while(|&b| is_secret_byte(b)).count();
                if n == 0 || n > channel::ops::MAX_SECRET_NAME_CHARS {
                    return Err(VaultError::BadReference {
                        reference: excerpt(reference),
                        reason: "a secret's name is 1 to 128 letters, digits and _",
                    });
                }
                let name = &tail[..n];
                let value = self
                    .delivered
                    .get(name)
                    .ok_or_else(|| VaultError::NotDelivered { name: name.into() })?;
                f(value);
                rest = &tail[n..];
                continue;
            }
            let bad = |reason| VaultError::BadReference {
                reference: excerpt(reference),
                reason,
            };
            let tail = reference
                .strip_prefix(REFERENCE_PREFIX)
                .ok_or_else(|| bad("only vault://local/NAME references are supported"))?;
            let n = tail.bytes().take_while(|&b| is_name_byte(b)).count();
            if n == 0 {
                return Err(bad("the entry name is missing"));
            }
            if n > MAX_NAME_LEN {
                return Err(bad("the entry name is longer than 64 characters"));
            }
            let name = &tail[..n];
            let value = self
                .entries
                .get(name)
                .ok_or_else(|| VaultError::UnknownReference {
                    reference: format!("{REFERENCE_PREFIX}{name}"),
                })?;
            f(value);
            rest = &tail[n..];
        }
        f(rest);
        Ok(())
    }

    /// The values (the vault's and the delivered secrets'), for redaction.
    pub fn secrets(&self) -> impl Iterator<Item = &str> {
        self.entries
            .values()
            .chain(self.delivered.values())
            .map(|v| v.as_str())
    }

    /// A redactor for this vault's values.
    pub fn redactor(&self) -> Redactor {
        Redactor::new(self.secrets())
    }
}

/// Where the next reference of either kind starts.
fn next_reference(s: &str) -> Option<usize> {
    match (s.find(SCHEME), s.find(SECRET_REF)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Moves the string entries of `table` into `out`, naming nested ones `a.b`.
fn flatten(
    table: toml::Table,
    prefix: Option<&str>,
    out: &mut BTreeMap<String, Zeroizing<String>>,
) -> Result<(), String> {
    for (key, value) in table {
        let name = match prefix {
            Some(p) => format!("{p}.{key}"),
            None => key,
        };
        match value {
            toml::Value::String(s) => {
                // Moved, not copied: the parser's buffer is the one zeroized on drop.
                let s = Zeroizing::new(s);
                if !valid_name(&name) {
                    return Err(format!(
                        "`{}` is not a valid entry name (1 to 64 of A-Z a-z 0-9 _ . -)",
                        name.escape_debug()
                    ));
                }
                if s.len() > MAX_VALUE_LEN {
                    return Err(format!(
                        "the value of `{name}` is longer than {MAX_VALUE_LEN} bytes"
                    ));
                }
                if out.insert(name.clone(), s).is_some() {
                    return Err(format!("`{name}` is defined twice"));
                }
            }
            toml::Value::Table(t) => flatten(t, Some(&name), out)?,
            other => {
                return Err(format!(
                    "`{}` must be a string, not {}",
                    name.escape_debug(),
                    other.type_str()
                ))
            }
        }
    }
    Ok(())
}

fn is_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')
}

fn valid_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len()) && name.bytes().all(is_name_byte)
}

/// The 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// The reference as written, up to the first character that cannot be part of it.
fn excerpt(reference: &str) -> String {
    reference
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '/' | '_' | '.' | '-'))
        .take(SCHEME.len() + 80)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt as _};

    const TEXT: &str = r#"
DB_PASSWORD = "correct horse battery staple"
api-token = 'tok_0123456789'
backup.s3-key = "AKIAEXAMPLE"

[deploy]
ssh_key = """
-----BEGIN KEY-----
abc
-----END KEY-----"""
"#;

    fn write(dir: &Path, text: &str, mode: u32) -> PathBuf {
        let path = dir.join("vault.toml");
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn parse(text: &str) -> Result<Vault, VaultError> {
        Vault::parse(text, Path::new("vault.toml"))
    }

    #[test]
    fn delivered_secrets_resolve_and_are_redacted() {
        let mut v = parse(TEXT).unwrap();
        let e = v.resolve("secret://DB_PASSWORD").unwrap_err();
        assert!(matches!(&e, VaultError::NotDelivered { name } if name == "DB_PASSWORD"));
        assert!(e.to_string().contains("Settings -> Secrets"), "{e}");
        v.deliver(BTreeMap::from([(
            "DB_PASSWORD".to_string(),
            Zeroizing::new("delivered-value-9f1c".to_string()),
        )]));
        assert_eq!(
            v.resolve("postgres://app:secret://DB_PASSWORD@db/app vault://local/api-token")
                .unwrap()
                .as_str(),
            "postgres://app:delivered-value-9f1c@db/app tok_0123456789"
        );
        let e = v.resolve("secret://").unwrap_err();
        assert!(matches!(e, VaultError::BadReference { .. }), "{e}");
        assert!(!format!("{v:?}").contains("delivered-value"), "{v:?}");
        let out = v.redactor().redact(b"pw=delivered-value-9f1c done");
        assert!(!String::from_utf8_lossy(&out).contains("delivered-value-9f1c"));

        assert_eq!(
            secret_names("a secret://A_1 and secret://B/x").unwrap(),
            vec!["A_1", "B"]
        );
        assert!(secret_names("secret://9LIVES").is_err());
        assert!(secret_names("secret://").is_err());
        assert!(secret_names("vault://local/x").unwrap().is_empty());
    }

    #[test]
    fn a_0600_file_loads_and_references_resolve() {
        let t = tempfile::tempdir().unwrap();
        let v = Vault::load(&write(t.path(), TEXT, 0o600)).unwrap();
        assert_eq!(
            v.names().collect::<Vec<_>>(),
            [
                "DB_PASSWORD",
                "api-token",
                "backup.s3-key",
                "deploy.ssh_key"
            ]
        );
        assert_eq!(
            v.resolve("postgres://app:vault://local/DB_PASSWORD@db/app")
                .unwrap()
                .as_str(),
            "postgres://app:correct horse battery staple@db/app"
        );
        assert_eq!(
            v.resolve("vault://local/api-token,vault://local/backup.s3-key")
                .unwrap()
                .as_str(),
            "tok_0123456789,AKIAEXAMPLE"
        );
        assert!(v
            .resolve("vault://local/deploy.ssh_key")
            .unwrap()
            .contains("BEGIN KEY"));
        assert_eq!(
            v.resolve("no references").unwrap().as_str(),
            "no references"
        );
        assert_eq!(v.resolve("").unwrap().as_str(), "");
        // A 0400 file has no group or other bits either.
        let v = Vault::load(&write(t.path(), TEXT, 0o400)).unwrap();
        assert_eq!(v.len(), 4);
    }

    #[test]
    fn values_are_not_resolved_twice() {
        let v = parse("A = \"vault://local/B\"\nB = \"bbbbbb\"").unwrap();
        assert_eq!(
            v.resolve("vault://local/A").unwrap().as_str(),
            "vault://local/B"
        );
    }

    #[test]
    fn unknown_and_malformed_references_are_errors_naming_the_reference() {
        let v = parse(TEXT).unwrap();
        let e = v.resolve("x vault://local/NOPE y").unwrap_err();
        assert!(matches!(e, VaultError::UnknownReference { .. }));
        assert_eq!(
            e.to_string(),
            "vault://local/NOPE is not in the local vault"
        );
        for (input, shown) in [
            ("vault://remote/DB_PASSWORD", "vault://remote/DB_PASSWORD"),
            ("a vault://local/ b", "vault://local/"),
            ("vault://local/!", "vault://local/"),
        ] {
            let e = v.resolve(input).unwrap_err();
            assert!(matches!(e, VaultError::BadReference { .. }), "{input}: {e}");
            assert!(e.to_string().contains(shown), "{input}: {e}");
        }
        let long = format!("vault://local/{}", "n".repeat(65));
        assert!(matches!(
            v.resolve(&long),
            Err(VaultError::BadReference { .. })
        ));
        // A name runs as far as name characters go.
        assert!(matches!(
            v.resolve("vault://local/DB_PASSWORD.").unwrap_err(),
            VaultError::UnknownReference { reference } if reference == "vault://local/DB_PASSWORD."
        ));
    }

    #[test]
    fn a_missing_file_is_an_empty_vault() {
        let t = tempfile::tempdir().unwrap();
        let v = Vault::load(&t.path().join("nope.toml")).unwrap();
        assert!(v.is_empty());
        assert_eq!(v.secrets().count(), 0);
        let v = Vault::load(&t.path().join("no/such/dir/vault.toml")).unwrap();
        assert!(v.is_empty());
    }

    #[test]
    fn group_or_other_access_is_refused_without_showing_values() {
        let t = tempfile::tempdir().unwrap();
        for mode in [0o644, 0o640, 0o604, 0o660, 0o601] {
            let path = write(t.path(), TEXT, mode);
            let e = Vault::load(&path).unwrap_err();
            assert!(matches!(e, VaultError::Permissions { .. }), "{mode:o}: {e}");
            let msg = e.to_string();
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains(&format!("{mode:04o}")), "{msg}");
            assert!(!msg.contains("horse"), "{msg}");
        }
    }

    #[test]
    fn links_directories_and_fifos_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let real = write(t.path(), TEXT, 0o600);
        let link = t.path().join("link.toml");
        symlink(&real, &link).unwrap();
        let e = Vault::load(&link).unwrap_err();
        assert!(matches!(e, VaultError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("link.toml"), "{e}");

        let dir = t.path().join("dir.toml");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(
            Vault::load(&dir),
            Err(VaultError::NotAFile { .. })
        ));

        let fifo = t.path().join("fifo.toml");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(matches!(
            Vault::load(&fifo),
            Err(VaultError::NotAFile { .. })
        ));
    }

    #[test]
    fn a_file_owned_by_another_user_is_refused() {
        if !rustix::process::geteuid().is_root() {
            eprintln!("skipped: changing a file's owner needs root");
            return;
        }
        let t = tempfile::tempdir().unwrap();
        let path = write(t.path(), TEXT, 0o600);
        std::os::unix::fs::chown(&path, Some(65534), None).unwrap();
        let e = Vault::load(&path).unwrap_err();
        assert!(
            matches!(
                e,
                VaultError::Owner {
                    owner: 65534,
                    expected: 0,
                    ..
                }
            ),
            "{e}"
        );
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }

    #[test]
    fn an_oversized_file_is_refused() {
        let t = tempfile::tempdir().unwrap();
        let big = format!(
            "A = \"{}\"\n",
            "x".repeat(usize::try_from(MAX_FILE_LEN).unwrap())
        );
        let e = Vault::load(&write(t.path(), &big, 0o600)).unwrap_err();
        assert!(matches!(e, VaultError::TooLarge { .. }), "{e}");
    }

    #[test]
    fn syntax_errors_give_the_line_but_not_the_text() {
        let e = parse("OK = \"fine\"\nBROKEN = \"hunter2-unterminated\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("line 2"), "{msg}");
        assert!(!msg.contains("hunter2"), "{msg}");
        let e = parse("A = \"one-secret\"\nA = \"two-secret\"\n")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret\""), "{e}");
    }

    #[test]
    fn names_and_value_types_are_checked() {
        for (text, shown) in [
            ("\"a b\" = \"value1\"", "a b"),
            ("\"\" = \"value1\"", "``"),
            (
                &format!("{} = \"value1\"", "n".repeat(65)),
                "not a valid entry name",
            ),
            ("PORT = 5432", "must be a string, not integer"),
            ("LIST = [\"value1\"]", "must be a string, not array"),
            (
                "\"a.b\" = \"value1\"\na.b = \"value2\"",
                "`a.b` is defined twice",
            ),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(shown), "{text}: {e}");
            assert!(
                !e.contains("value1") && !e.contains("value2"),
                "{text}: {e}"
            );
        }
        let big = format!("A = \"{}\"", "x".repeat(MAX_VALUE_LEN + 1));
        assert!(parse(&big).unwrap_err().to_string().contains("longer than"));
        assert_eq!(
            parse(&format!("{} = \"value1\"", "n".repeat(64)))
                .unwrap()
                .len(),
            1
        );
    }

    #[test]
    fn debug_shows_names_only_and_secrets_feed_the_redactor() {
        let v = parse(TEXT).unwrap();
        let shown = format!("{v:?}");
        assert!(shown.contains("DB_PASSWORD"), "{shown}");
        for value in v.secrets() {
            assert!(!shown.contains(value), "{shown}");
        }
        let secrets: Vec<&str> = v.secrets().collect();
        assert!(secrets.contains(&"AKIAEXAMPLE") && secrets.contains(&"tok_0123456789"));
        assert_eq!(secrets.len(), 4);
        let out = v
            .redactor()
            .redact(b"pw=correct horse battery staple key=AKIAEXAMPLE\n");
        assert_eq!(out, b"pw=[REDACTED] key=[REDACTED]\n");
    }
}
