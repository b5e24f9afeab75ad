//! The commands "Add server" shows: one line that installs the agent from the
//! control plane's gateway, and the same by hand; and the signed release a
//! releases directory holds ([`read_release`]), for the gateway and "Update agent".
//!
//! The one line fetches the agent CA certificate without trusting it, checks
//! its SHA-256 against the pin the token carries, and only then fetches the
//! install script over TLS verified by that CA and runs it; the token goes in
//! on standard input (never on a command line, where `ps` shows it). The script
//! itself (served at `/install/agent.sh`) checks the pin again and checks the
//! binary's release signature before installing it.

use channel::token::RegistrationToken;

pub use channel::release::Manifest;

/// The platform the manual steps download and whose release "Update agent"
/// offers (agents do not declare theirs yet).
pub const DEFAULT_PLATFORM: &str = "x86_64-linux";

/// What "Add server" shows for one token.
#[derive(Clone, PartialEq, Eq)]
pub struct InstallCommands {
    /// Run as root on the new server: installs, registers, starts.
    pub one_line: String,
    /// The manual steps' registration command (the binary already installed).
    pub register: String,
    /// The manual steps' download of the binary, its manifest and the release key.
    pub download: String,
}

impl std::fmt::Debug for InstallCommands {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstallCommands").finish_non_exhaustive()
    }
}

/// Single-quotes `s` for a POSIX shell.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The commands for `token` and the gateway at `agent_url` (`https://HOST:PORT`).
/// `None` when the token is not a registration token.
pub fn install_commands(agent_url: &str, token: &str) -> Option<InstallCommands> {
    let parsed: RegistrationToken = token.parse().ok()?;
    let pin = parsed.pin().to_hex();
    let token = sh_quote(parsed.expose());
    let url = agent_url.trim_end_matches('/');
    // Inside the single-quoted program below, the URL is quoted with double
    // quotes; it holds only a host and a port.
    let program = format!(
        "set -eu; d=$(mktemp -d); trap \"rm -rf $d\" EXIT; \
         curl -fsSk --proto =https \"{url}/install/ca.pem\" -o $d/ca.pem; \
         [ \"$(openssl x509 -in $d/ca.pem -outform DER | sha256sum | cut -c1-64)\" = {pin} ] \
         || {{ echo \"pilothouse install: the CA does not match the pin in the token; nothing was sent\" >&2; exit 1; }}; \
         curl -fsS --proto =https --cacert $d/ca.pem \"{url}/install/agent.sh\" -o $d/agent.sh; \
         sh $d/agent.sh --ca $d/ca.pem"
    );
    Some(InstallCommands {
        one_line: format!("printf '%s\\n' {token} | sh -c {}", sh_quote(&program)),
        register: format!(
            "printf '%s\\n' {token} | pilothouse-agent register --server {url} --token-file -"
        ),
        download: format!(
            "curl -fsSk --proto =https -O {url}/install/ca.pem && \
             openssl x509 -in ca.pem -outform DER | sha256sum   # must print {pin}\n\
             curl -fsS --cacert ca.pem -O {url}/install/{DEFAULT_PLATFORM}/pilothouse-agent \
             -O {url}/install/{DEFAULT_PLATFORM}/release.txt -O {url}/install/release-key.pem"
        ),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const TOKEN: &str = "pht1_0123456789abcdef0123456789abcdef_\
        00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn the_one_line_checks_the_pin_before_fetching_the_script_and_passes_the_token_on_stdin() {
        let c = install_commands("https://gw.example:8443", TOKEN).unwrap();
        let pin_check = c
            .one_line
            .find("00112233445566778899aabbccddeeff00112233")
            .unwrap();
        let script = c.one_line.find("/install/agent.sh").unwrap();
        assert!(pin_check < script);
        assert!(c
            .one_line
            .starts_with(&format!("printf '%s\\n' '{TOKEN}' | sh -c '")));
        // The token appears once, as printf's argument: never on sh's command line.
        assert_eq!(c.one_line.matches("pht1_").count(), 1);
        assert!(c.register.contains("--token-file -"));
        assert!(install_commands("https://gw.example:8443", "pht1_nope").is_none());
    }
}

/// The agent release a releases directory holds for one platform (see
/// `server::install` for the layout), read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvailableRelease {
    pub manifest: channel::release::Manifest,
    /// `SHA256:...` of the release key the manifest verified with.
    pub key_fingerprint: String,
}

/// Reads `dir/<platform>/release.txt` and `dir/release-key.pem` and checks the
/// manifest's signature; with `check_binary`, also reads the binary and checks
/// its digest. `Ok(None)` when there is no release for `platform`; `Err` with a
/// sentence when there is one that would not install.
pub fn read_release(
    dir: &std::path::Path,
    platform: &str,
    check_binary: bool,
) -> Result<Option<AvailableRelease>, String> {
    use channel::release::{Manifest, ReleasePublicKey};
    if !channel::release::valid_platform(platform) {
        return Err(format!("{platform:?} is not a platform"));
    }
    let manifest_path = dir.join(platform).join("release.txt");
    let text = match std::fs::read_to_string(&manifest_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", manifest_path.display())),
    };
    let manifest = Manifest::parse(&text).map_err(|e| e.to_string())?;
    let key_path = dir.join("release-key.pem");
    let key = std::fs::read_to_string(&key_path)
        .map_err(|e| format!("{}: {e}", key_path.display()))
        .and_then(|t| ReleasePublicKey::from_pem(&t).map_err(|e| e.to_string()))?;
    if check_binary {
        let binary_path = dir.join(platform).join("pilothouse-agent");
        let binary =
            std::fs::read(&binary_path).map_err(|e| format!("{}: {e}", binary_path.display()))?;
        manifest
            .verify_for(&key, &binary, platform)
            .map_err(|e| e.to_string())?;
    } else {
        // The signature over the manifest alone (the digest it names is
        // checked by whoever reads the binary).
        manifest.verify_signature(&key).map_err(|e| e.to_string())?;
        if manifest.platform != platform {
            return Err(format!(
                "the release in {platform}/ is for {}",
                manifest.platform
            ));
        }
    }
    Ok(Some(AvailableRelease {
        key_fingerprint: key.fingerprint(),
        manifest,
    }))
}

/// [`read_release`] on the blocking pool: it reads files and, with
/// `check_binary`, hashes a binary of several megabytes.
pub async fn read_release_blocking(
    dir: std::path::PathBuf,
    platform: &'static str,
    check_binary: bool,
) -> Result<Option<AvailableRelease>, String> {
    tokio::task::spawn_blocking(move || read_release(&dir, platform, check_binary))
        .await
        .map_err(|e| e.to_string())?
}
