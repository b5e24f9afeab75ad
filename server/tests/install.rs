//! The one-line agent install, end to end, with no stand-in: a real
//! `pilothouse serve` process serves the install script, the CA and a release
//! signed with `pilothouse release sign`; the command "Add server" shows runs
//! as root in a private mount namespace whose /etc, /usr/local and /var/lib
//! are throwaway overlays on this machine's own (so the system user, the unit,
//! the binary and the state directory land in a layer the test removes); the
//! installed agent then runs as its unit says and must come up Online with
//! metrics. Also: the command run twice leaves one installation; a token whose
//! pin does not match the control plane's CA is refused before the token goes
//! anywhere; a tampered binary or one signed by another key is not installed.
//!
//! Needs root, `unshare` and overlayfs (CI has them, and fails without them);
//! anywhere else it prints SKIP, lists itself in `make test`'s skips and returns.

#![allow(clippy::unwrap_used)]

#[path = "helpers/cli.rs"]
mod cli_helpers;
#[path = "helpers/machine.rs"]
mod machine;
#[path = "helpers/process.rs"]
mod process;

use machine::skip;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_helpers::{add_owner, release_keygen, release_sign, text};
use process::{agent_binary, call, serve, sign_in, PASSWORD};

/// Why this machine cannot run the test, if it cannot.
fn cannot_run() -> Option<String> {
    let uid = Command::new("id").arg("-u").output().ok()?;
    if text(&uid.stdout).trim() != "0" {
        return Some("not root".into());
    }
    let probe = Command::new("unshare")
        .args(["--mount", "--fork", "true"])
        .status();
    match probe {
        Ok(s) if s.success() => None,
        _ => Some("`unshare --mount` is not allowed here".into()),
    }
}

/// The directories the install script writes to.
const SCRIPT_DIRS: &str = "etc usr/local var/lib";

/// Runs `script` with `sh -c` in a new mount namespace where each of `dirs`
/// (relative to /) is an overlay whose upper layer lives under `layer`.
fn in_namespace_over(layer: &Path, dirs: &str, script: &str) -> Command {
    let setup = format!(
        "set -eu; L='{}'; for d in {dirs}; do \
         mkdir -p \"$L/upper/$d\" \"$L/work/$d\"; \
         mount -t overlay overlay -o \"lowerdir=/$d,upperdir=$L/upper/$d,workdir=$L/work/$d\" \"/$d\"; \
         done\n{script}",
        layer.display()
    );
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--fork",
        "sh",
        "-c",
        &setup,
    ]);
    cmd
}

/// [`in_namespace_over`] the install script's directories.
fn in_namespace(layer: &Path, script: &str) -> Command {
    in_namespace_over(layer, SCRIPT_DIRS, script)
}

fn run(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// The one-line command for a new token, and the token's CA pin.
async fn new_install_command(client: &reqwest::Client, web: &str) -> (String, String) {
    let t = call(client, web, "create-registration-token").await;
    let token = t["token"].as_str().unwrap().to_string();
    let pin = token.rsplit('_').next().unwrap().to_string();
    (t["install"].as_str().unwrap().to_string(), pin)
}

fn check_line<'a>(out: &'a str, name: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name}= in:\n{out}"))
}

/// A client that takes the gateway's certificate unchecked: it only reads what
/// the gateway serves, to compare it with what the install wrote.
fn unverified() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_one_line_install_brings_an_agent_online_and_refuses_what_it_must() {
    if let Some(why) = cannot_run() {
        skip("the one-line agent install", &why);
        return;
    }
    let agent = agent_binary();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("release.key");
    let releases = data.join("releases");

    release_keygen(&key);
    release_sign(&key, &agent, &releases, None);
    add_owner(&data, PASSWORD);

    let server = serve(&data);
    let owner = sign_in(&server.web).await;

    // A token whose pin is not this control plane's CA: refused before the
    // token is sent, and nothing is installed.
    let (command, pin) = new_install_command(&owner, &server.web).await;
    let wrong = command.replace(&pin, &"0".repeat(64));
    let layer = dir.path().join("wrong-pin");
    let (code, _, err) = run(in_namespace(
        &layer,
        &format!("{wrong}\ntest ! -e /usr/local/bin/pilothouse-agent"),
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not match the pin in the token"), "{err}");
    let tokens = call(&owner, &server.web, "registration-tokens").await;
    assert!(
        tokens
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["state"] == "Active"),
        "a token was used: {tokens}"
    );

    // The script on its own checks the pin too.
    let (code, _, err) = run(in_namespace(
        &dir.path().join("script-pin"),
        &format!(
            "curl -fsSk {}/install/agent.sh -o /tmp/agent.sh; printf '%s\\n' 'pht1_{}_{}' | sh /tmp/agent.sh",
            server.gateway,
            "a".repeat(32),
            "0".repeat(64)
        ),
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("does not match the pin in the token"), "{err}");

    // An unsupported system or architecture, and a user who is not root, are
    // refused with a sentence before anything else.
    let script = dir.path().join("agent.sh");
    let served = process::page(
        &unverified(),
        &format!("{}/install/agent.sh", server.gateway),
    )
    .await;
    std::fs::write(&script, served).unwrap();
    let fake = dir.path().join("fake-bin");
    std::fs::create_dir(&fake).unwrap();
    for (system, machine, says) in [
        (
            "FreeBSD",
            "amd64",
            "supports Linux only; this machine runs FreeBSD",
        ),
        (
            "Linux",
            "riscv64",
            "no agent build exists for the riscv64 architecture",
        ),
    ] {
        let uname = fake.join("uname");
        std::fs::write(
            &uname,
            format!("#!/bin/sh\ncase $1 in -s) echo {system} ;; -m) echo {machine} ;; esac\n"),
        )
        .unwrap();
        std::fs::set_permissions(&uname, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let out = Command::new("sh")
            .arg(&script)
            .env(
                "PATH",
                format!("{}:{}", fake.display(), std::env::var("PATH").unwrap()),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(text(&out.stderr).contains(says), "{}", text(&out.stderr));
    }
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "sh"])
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("run this as root"),
        "{}",
        text(&out.stderr)
    );

    // A tampered binary is not installed: its digest no longer matches.
    let binary = releases.join("x86_64-linux/pilothouse-agent");
    let good = std::fs::read(&binary).unwrap();
    let mut bad = good.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    std::fs::write(&binary, &bad).unwrap();
    let (command, _) = new_install_command(&owner, &server.web).await;
    let (code, _, err) = run(in_namespace(
        &dir.path().join("tampered"),
        &format!("{command}\ntest ! -e /usr/local/bin/pilothouse-agent"),
    ));
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("is not the one its release manifest names"),
        "{err}"
    );
    std::fs::write(&binary, &good).unwrap();

    // A release signed by another key than the one the server publishes.
    let other = dir.path().join("other.key");
    let other_releases = dir.path().join("other-releases");
    release_keygen(&other);
    release_sign(&other, &agent, &other_releases, None);
    let manifest = releases.join("x86_64-linux/release.txt");
    let genuine = std::fs::read(&manifest).unwrap();
    std::fs::copy(other_releases.join("x86_64-linux/release.txt"), &manifest).unwrap();
    let (code, _, err) = run(in_namespace(
        &dir.path().join("other-key"),
        &format!("{command}\ntest ! -e /usr/local/bin/pilothouse-agent"),
    ));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("release signature does not verify"), "{err}");
    std::fs::write(&manifest, genuine).unwrap();

    // The real install, twice, then the agent as its unit runs it. A config
    // written beforehand must be kept (the script never overwrites it); it
    // asks for a metrics sample every second.
    let layer = dir.path().join("install");
    let script = format!(
        r#"mkdir -p /etc/pilothouse
printf 'metrics_interval_secs = 1\n' > /etc/pilothouse/agent.toml
{command}
# A self-update staged before a reinstall: the install replaces it.
mkdir -p /var/lib/pilothouse-agent/bin && touch /var/lib/pilothouse-agent/bin/pilothouse-agent
{command}
echo "update_dir=$(test -e /var/lib/pilothouse-agent/bin && echo present || echo gone)"
unit=/etc/systemd/system/pilothouse-agent.service
echo "passwd_lines=$(grep -c '^pilothouse-agent:' /etc/passwd)"
echo "state=$(stat -c '%a %U' /var/lib/pilothouse-agent)"
echo "keys=$(stat -c '%a %U' /var/lib/pilothouse-agent/identity.key)"
echo "binary=$(stat -c '%a %U' /usr/local/bin/pilothouse-agent)"
echo "unit_mode=$(stat -c '%a' $unit)"
echo "config=$(cat /etc/pilothouse/agent.toml)"
echo "release_key=$(stat -c '%a' /etc/pilothouse/release-key.pem)"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify "$unit" >/dev/null 2>&1 && echo "verify=ok" || {{ echo "verify=failed"; systemd-analyze verify "$unit"; }}
else
  echo "verify=SKIP (no systemd-analyze)"
fi
cp $unit {unit_copy}
user=$(sed -n 's/^User=//p' $unit)
exec_start=$(sed -n 's/^ExecStart=//p' $unit)
echo "started=yes"
exec setpriv --reuid="$user" --regid="$user" --init-groups $exec_start
"#,
        unit_copy = dir.path().join("unit").display()
    );
    let mut cmd = in_namespace(&layer, &script);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.process_group(0);
    let mut child = cmd.spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let out_lines = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            if line == "started=yes" {
                break;
            }
        }
        all
    });
    let err_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let err_text = err_text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                err_text.lock().unwrap().push_str(&(line + "\n"));
            }
        });
    }
    struct Group(Child);
    impl Drop for Group {
        fn drop(&mut self) {
            // The whole process group: the namespace's shell and the agent.
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.0.id())])
                .status();
            let _ = self.0.wait();
        }
    }
    let mut group = Group(child);

    let deadline = Instant::now() + Duration::from_secs(90);
    let view = loop {
        if let Ok(Some(status)) = group.0.try_wait() {
            panic!(
                "the install or the agent ended ({status}):\n{}",
                err_text.lock().unwrap()
            );
        }
        let list = call(&owner, &server.web, "list-servers").await;
        if let Some(v) = list
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["online"] == true && !v["mem_total"].is_null())
        {
            break v.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no agent came up Online with metrics: {list}\n{}",
            err_text.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let out = out_lines.join().unwrap();
    let err = err_text.lock().unwrap().clone();
    assert_eq!(view["agent_version"], env!("CARGO_PKG_VERSION"), "{view}");
    assert_eq!(check_line(&out, "passwd_lines"), "1", "{out}");
    assert_eq!(check_line(&out, "update_dir"), "gone", "{out}");
    assert_eq!(check_line(&out, "state"), "700 pilothouse-agent", "{out}");
    assert_eq!(check_line(&out, "keys"), "600 pilothouse-agent", "{out}");
    assert_eq!(check_line(&out, "binary"), "755 root", "{out}");
    assert_eq!(check_line(&out, "unit_mode"), "644", "{out}");
    assert_eq!(check_line(&out, "release_key"), "644", "{out}");
    assert_eq!(
        check_line(&out, "config"),
        "metrics_interval_secs = 1",
        "{out}"
    );
    let verify = check_line(&out, "verify");
    if verify.starts_with("SKIP") {
        skip("systemd-analyze verify of the installed unit", verify);
    } else {
        assert_eq!(verify, "ok", "{out}");
    }
    assert!(
        err.contains("already registered; keeping that registration"),
        "the second run registered again:\n{err}"
    );
    // Exactly one server, registered once.
    let list = call(&owner, &server.web, "list-servers").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    // The unit written is the one the gateway serves.
    let served = process::page(
        &unverified(),
        &format!("{}/install/pilothouse-agent.service", server.gateway),
    )
    .await;
    let written = std::fs::read_to_string(dir.path().join("unit")).unwrap();
    assert_eq!(written.trim_end(), served.trim_end());
    drop(group);
    let _ = std::io::stderr().flush();
}

/// The agent's Debian package, built with cargo-deb and installed with the
/// real `dpkg` in a mount namespace whose /etc, /usr and /var are throwaway
/// overlays: its files, their modes, the conffile, the unit, the system user
/// and the state directory; a second install keeps a changed conffile; a purge
/// removes the state and keeps the user.
#[test]
fn the_debian_package_installs_the_agent_its_user_and_its_unit() {
    if let Some(why) = cannot_run() {
        skip("the Debian package install", &why);
        return;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let probe = Command::new(&cargo).args(["deb", "--version"]).output();
    if !probe.is_ok_and(|o| o.status.success()) {
        skip(
            "the Debian package install",
            "cargo-deb is not installed (scripts/install.sh installs it)",
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let out_dir = dir.path().join("deb");
    // The dev profile keeps this test's build incremental; `make deb` packages
    // the agent-release build. cargo-deb 3.8 warns about the dev profile.
    let built = Command::new(&cargo)
        .args(["deb", "-p", "agent", "--profile", "dev", "--no-strip", "-o"])
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(built.status.success(), "{}", text(&built.stderr));
    let deb = std::fs::read_dir(&out_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .expect("cargo deb wrote a .deb");

    let unit = "/usr/lib/systemd/system/pilothouse-agent.service";
    let script = format!(
        r#"deb='{deb}'
msg=$(dpkg -i "$deb")
echo "$msg" | grep -q 'runuser -u pilothouse-agent -- pilothouse-agent register' && echo "postinst_msg=yes" || echo "postinst_msg=no"
echo "binary=$(stat -c '%a %U' /usr/bin/pilothouse-agent)"
echo "version=$(pilothouse-agent --version)"
echo "unit_mode=$(stat -c '%a' {unit})"
echo "exec_start=$(sed -n 's/^ExecStart=//p' {unit})"
echo "user=$(sed -n 's/^User=//p' {unit})"
echo "conffiles=$(dpkg-query -W -f='${{Conffiles}}' pilothouse-agent | awk '{{print $1}}' | tr '\n' ' ')"
echo "config_mode=$(stat -c '%a %U' /etc/pilothouse/agent.toml)"
echo "passwd=$(getent passwd pilothouse-agent | cut -d: -f1,6,7)"
echo "state=$(stat -c '%a %U' /var/lib/pilothouse-agent)"
if command -v systemd-analyze >/dev/null; then
  systemd-analyze verify {unit} >/dev/null 2>&1 && echo "verify=ok" || {{ echo "verify=failed"; systemd-analyze verify {unit}; }}
else
  echo "verify=SKIP (no systemd-analyze)"
fi
echo 'metrics_interval_secs = 30' >> /etc/pilothouse/agent.toml
mkdir -p /var/lib/pilothouse-agent/bin && touch /var/lib/pilothouse-agent/bin/pilothouse-agent
dpkg -i --force-confold "$deb" >/dev/null
echo "update_dir=$(test -e /var/lib/pilothouse-agent/bin && echo present || echo gone)"
echo "kept=$(grep -c '^metrics_interval_secs = 30' /etc/pilothouse/agent.toml)"
echo "passwd_lines=$(grep -c '^pilothouse-agent:' /etc/passwd)"
dpkg --purge pilothouse-agent >/dev/null
echo "purged_state=$(test -e /var/lib/pilothouse-agent && echo present || echo gone)"
echo "purged_binary=$(test -e /usr/bin/pilothouse-agent && echo present || echo gone)"
echo "user_after_purge=$(getent passwd pilothouse-agent | cut -d: -f1)"
"#,
        deb = deb.display()
    );
    let (code, out, err) = run(in_namespace_over(
        &dir.path().join("layer"),
        "etc usr var",
        &script,
    ));
    assert_eq!(code, 0, "{out}\n{err}");
    let expect = |name: &str, want: &str| {
        assert_eq!(check_line(&out, name), want, "{name}:\n{out}\n{err}");
    };
    expect("binary", "755 root");
    expect(
        "version",
        &format!("pilothouse-agent {}", env!("CARGO_PKG_VERSION")),
    );
    expect("unit_mode", "644");
    expect(
        "exec_start",
        "pilothouse-agent run --state-dir /var/lib/pilothouse-agent --config /etc/pilothouse/agent.toml",
    );
    expect("user", "pilothouse-agent");
    expect("conffiles", "/etc/pilothouse/agent.toml ");
    expect("config_mode", "644 root");
    expect(
        "passwd",
        "pilothouse-agent:/var/lib/pilothouse-agent:/usr/sbin/nologin",
    );
    expect("state", "700 pilothouse-agent");
    expect("kept", "1");
    expect("update_dir", "gone");
    expect("passwd_lines", "1");
    expect("purged_state", "gone");
    expect("purged_binary", "gone");
    expect("user_after_purge", "pilothouse-agent");
    let verify = check_line(&out, "verify");
    if verify.starts_with("SKIP") {
        skip("systemd-analyze verify of the packaged unit", verify);
    } else {
        assert_eq!(verify, "ok", "{out}");
    }
    // The postinst says how to register and start.
    expect("postinst_msg", "yes");
}
