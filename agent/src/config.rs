//! The agent's own configuration file (`/etc/pilothouse/agent.toml`), the local
//! policy the control plane cannot override.
//!
//! ```toml
//! poll_wait_secs = 25          # how long a long-poll may be held
//! metrics_interval_secs = 60   # how often a metrics sample is taken
//! allow = ["ping", "rotate_keys", "register_pqc_key", "update_agent"]   # the control plane's own kinds this host runs
//! production = false           # true: refuse every operation the AI Pilot proposed
//! release_key = "/etc/pilothouse/release-key.pem"   # the pinned key releases must be signed with
//! update_stable_after_secs = 60   # how long a new version runs healthy before it is kept
//!
//! [operations]                 # catalogued operations and what they run here (see `ops`)
//! restart_service = ["systemctl", "restart", "{unit}"]
//! units = ["nginx.service"]
//! ```
//!
//! Catalogued operations (`restart_service`, ...) run only when `[operations]`
//! configures them; `allow` covers the control plane's own kinds. `update_agent`
//! is allowed by default but installs only releases signed with `release_key`
//! (see [`crate::update`]): without that file every update is refused.
//!
//! Every key is optional. Invariant: a loaded [`Config`] has values in range; an
//! unknown key is an error (a typo must not silently widen or narrow the policy).

use channel::api::kinds;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Where `run` looks when `--config` is not given (a missing file is fine there).
pub const DEFAULT_CONFIG: &str = "/etc/pilothouse/agent.toml";
/// Where the install script pins the release public key.
pub const DEFAULT_RELEASE_KEY: &str = "/etc/pilothouse/release-key.pem";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the configuration file {path} is invalid: {reason}")]
    Invalid { path: PathBuf, reason: String },
}

/// The agent's configuration, with defaults applied.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub poll_wait_secs: u64,
    pub metrics_interval_secs: u64,
    pub allow: BTreeSet<String>,
    /// A production host refuses every operation the AI Pilot proposed.
    pub production: bool,
    pub operations: crate::ops::OpsConfig,
    /// The release public key (SubjectPublicKeyInfo PEM) every update must be
    /// signed with.
    pub release_key: PathBuf,
    /// How long a new version must run, polling successfully, before it is
    /// marked stable (a restart before that reverts it).
    pub update_stable_after_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            poll_wait_secs: 25,
            metrics_interval_secs: 60,
            allow: [
                kinds::PING,
                kinds::ROTATE_KEYS,
                kinds::REGISTER_PQC_KEY,
                kinds::UPDATE_AGENT,
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            production: false,
            operations: crate::ops::OpsConfig::default(),
            release_key: PathBuf::from(DEFAULT_RELEASE_KEY),
            update_stable_after_secs: 60,
        }
    }
}

impl Config {
    /// Whether the local policy lets commands of `kind` run: a catalogued
    /// operation if `[operations]` configures it (its arguments and approval are
    /// checked next, by [`crate::ops::admit`]), any other kind if `allow` lists it.
    pub fn allows(&self, kind: &str) -> bool {
        match kind.parse::<channel::ops::OpKind>() {
            Ok(op) => self.operations.offers(op),
            Err(_) => self.allow.contains(kind),
        }
    }

    /// Loads `explicit` (which must exist) or the default path (which may not).
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let (path, required) = match explicit {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text, &path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    /// Parses and range-checks a configuration text.
    pub fn parse(text: &str, path: &Path) -> Result<Self, ConfigError> {
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let config: Config = toml::from_str(text).map_err(|e| invalid(e.message().to_string()))?;
        if !(1..=300).contains(&config.poll_wait_secs) {
            return Err(invalid("poll_wait_secs must be between 1 and 300".into()));
        }
        if !(1..=3600).contains(&config.metrics_interval_secs) {
            return Err(invalid(
                "metrics_interval_secs must be between 1 and 3600".into(),
            ));
        }
        if !(1..=3600).contains(&config.update_stable_after_secs) {
            return Err(invalid(
                "update_stable_after_secs must be between 1 and 3600".into(),
            ));
        }
        if let Some(bad) = config.allow.iter().find(|k| !valid_kind(k)) {
            return Err(invalid(format!("`{bad}` in allow is not a command kind")));
        }
        config.operations.check().map_err(invalid)?;
        Ok(config)
    }
}

fn valid_kind(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= channel::envelope::MAX_KIND_BYTES
        && k.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b':' | b'/' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("agent.toml"))
    }

    #[test]
    fn defaults_apply_to_missing_keys() {
        let c = parse("").unwrap();
        assert_eq!(c, Config::default());
        assert!(c.allows("ping") && c.allows("rotate_keys") && c.allows("register_pqc_key"));
        assert!(c.allows("update_agent"));
        assert_eq!(c.release_key, Path::new("/etc/pilothouse/release-key.pem"));
        assert_eq!(c.update_stable_after_secs, 60);
        let c = parse("metrics_interval_secs = 30\nallow = [\"ping\"]").unwrap();
        assert_eq!(c.metrics_interval_secs, 30);
        assert_eq!(c.poll_wait_secs, 25);
        assert!(!c.allows("rotate_keys"));
        assert!(!c.allows("update_agent"));
    }

    #[test]
    fn the_update_keys_are_read_and_range_checked() {
        let c =
            parse("release_key = \"/opt/keys/release.pem\"\nupdate_stable_after_secs = 1").unwrap();
        assert_eq!(c.release_key, Path::new("/opt/keys/release.pem"));
        assert_eq!(c.update_stable_after_secs, 1);
        assert_eq!(
            parse("update_stable_after_secs = 3600")
                .unwrap()
                .update_stable_after_secs,
            3600
        );
        for bad in [
            "update_stable_after_secs = 0",
            "update_stable_after_secs = 3601",
            "update_stable_after_secs = -1",
            "release_key = 5",
            "release_keys = \"/x\"",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("agent.toml"), "{bad}: {err}");
        }
        let err = parse("update_stable_after_secs = 0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("between 1 and 3600"), "{err}");
    }

    #[test]
    fn typos_and_out_of_range_values_are_errors() {
        for bad in [
            "allow_list = []",
            "poll_wait_secs = 0",
            "metrics_interval_secs = 0",
            "allow = [\"rm -rf\"]",
            "poll_wait_secs = \"25\"",
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains("agent.toml"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_missing_default_file_is_fine_but_a_missing_explicit_one_is_not() {
        let t = tempfile::tempdir().unwrap();
        let missing = t.path().join("nope.toml");
        assert!(matches!(
            Config::load(Some(&missing)),
            Err(ConfigError::Read { .. })
        ));
        let file = t.path().join("agent.toml");
        std::fs::write(&file, "allow = []").unwrap();
        assert!(Config::load(Some(&file)).unwrap().allow.is_empty());
    }
}
