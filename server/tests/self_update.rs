//! Signed self-update with a real agent process against a real `pilothouse
//! serve`, no stand-in: an Owner clicks "Update agent" (the server function),
//! the agent downloads the release over its mutual-TLS channel, checks it
//! against the release key it pinned and switches; a loop restarts it as
//! systemd's `Restart=always` would. Covered: an update signed by the release
//! key is applied and its version shows on the server page; one signed by
//! another key is refused and audited while the agent keeps running; one that
//! exits at once at start is rolled back to the previous binary and the revert
//! is reported.

#![allow(clippy::unwrap_used)]

#[path = "helpers/cli.rs"]
mod cli_helpers;
#[path = "helpers/process.rs"]
mod process;

use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use cli_helpers::{add_owner, ok, pilothouse, release_keygen, release_sign, text};
use process::{agent_binary, call, serve, sign_in, PASSWORD};
use serde_json::Value;

/// The agent under a restart loop, in its own process group.
struct Supervised(Child);

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.wait();
    }
}

async fn server_view(owner: &reqwest::Client, web: &str) -> Value {
    let list = call(owner, web, "list-servers").await;
    list.as_array().unwrap()[0].clone()
}

async fn audit_actions(owner: &reqwest::Client, web: &str) -> Vec<(String, Value)> {
    let res = owner
        .post(format!("{web}/api/latest-audit-events"))
        .form(&[("limit", "100")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let events: Value = res.json().await.unwrap();
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["action"].as_str().unwrap_or("").to_string(), e.clone()))
        .collect()
}

/// Waits until `done` holds for the server's view and the audit log.
async fn wait_for(
    owner: &reqwest::Client,
    web: &str,
    what: &str,
    log: &Path,
    done: impl Fn(&Value, &[(String, Value)]) -> bool,
) -> (Value, Vec<(String, Value)>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let view = server_view(owner, web).await;
        let audit = audit_actions(owner, web).await;
        if done(&view, &audit) {
            return (view, audit);
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not happen: {view}\n{:?}\nagent log:\n{}",
            audit.iter().map(|(a, _)| a).collect::<Vec<_>>(),
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn update(owner: &reqwest::Client, web: &str, id: &str) -> reqwest::Response {
    owner
        .post(format!("{web}/api/update-agent"))
        .form(&[("id", id)])
        .send()
        .await
        .unwrap()
}

/// "Update selected agents" on the servers list, as its form posts the
/// ticked checkboxes; returns what became of each server.
async fn update_selection(owner: &reqwest::Client, web: &str, ids: &[&str]) -> Vec<Value> {
    let form: Vec<(String, &str)> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| (format!("ids[{i}]"), *id))
        .collect();
    let res = owner
        .post(format!("{web}/api/update-agents"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    res.json::<Value>()
        .await
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn count(audit: &[(String, Value)], action: &str) -> usize {
    audit.iter().filter(|(a, _)| a == action).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_update_is_applied_another_key_refused_and_a_crashing_one_rolled_back() {
    let agent = agent_binary();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let releases = data.join("releases");
    let key = dir.path().join("release.key");
    release_keygen(&key);
    // The same bytes, signed as a newer release: after the switch the agent
    // reports the version its release manifest names.
    release_sign(&key, &agent, &releases, Some("0.2.0"));
    add_owner(&data, PASSWORD);
    let server = serve(&data);
    let owner = sign_in(&server.web).await;

    // The release download is for enrolled agents only: without a client
    // certificate it is refused, and no byte of the binary goes out.
    let stranger = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
        .get(format!(
            "{}/agent/v1/release/{}",
            server.gateway,
            channel::release::current_platform()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 401);
    assert!(stranger.text().await.unwrap().len() < 1024);

    // Register as the install script does, pinning the release key it got.
    let token = ok(pilothouse(
        &[
            "admin",
            "registration-token",
            "--data-dir",
            data.to_str().unwrap(),
            "--org",
            "Acme",
        ],
        "",
    ));
    let token = token.lines().last().unwrap().trim().to_string();
    let state = dir.path().join("agent");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let mut reg = Command::new(&agent)
        .args([
            "register",
            "--server",
            &server.gateway,
            "--token-file",
            "-",
            "--state-dir",
        ])
        .arg(&state)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(reg.stdin.as_mut().unwrap(), format!("{token}\n").as_bytes())
        .unwrap();
    let out = reg.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let pinned = dir.path().join("release-key.pem");
    std::fs::copy(releases.join("release-key.pem"), &pinned).unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "metrics_interval_secs = 1\nupdate_stable_after_secs = 2\nrelease_key = \"{}\"\n",
            pinned.display()
        ),
    )
    .unwrap();
    let log = dir.path().join("agent.log");
    let mut supervisor = Command::new("sh");
    supervisor
        .arg("-c")
        .arg(format!(
            "while :; do '{}' run --state-dir '{}' --config '{}'; echo \"exited $?\" >&2; sleep 0.5; done",
            agent.display(),
            state.display(),
            config.display()
        ))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .process_group(0);
    let _agent = Supervised(supervisor.spawn().unwrap());

    let (view, _) = wait_for(
        &owner,
        &server.web,
        "the agent coming online",
        &log,
        |v, _| v["online"] == true,
    )
    .await;
    let id = view["id"].as_str().unwrap().to_string();
    assert_eq!(view["agent_version"], env!("CARGO_PKG_VERSION"));
    // Its health comes with its metrics: clock in step, no error yet.
    let (view, _) = wait_for(&owner, &server.web, "a health report", &log, |v, _| {
        v["health"].is_object()
    })
    .await;
    assert!(
        view["health"]["clock_skew_ms"].as_i64().unwrap().abs() < 5_000,
        "{view}"
    );
    assert!(view["health"]["last_error"].is_null(), "{view}");

    // 1. Signed by the release key, offered to a selection from the servers
    // list (the server ticked twice, and one that does not exist): applied,
    // the new version shows.
    let offers = update_selection(
        &owner,
        &server.web,
        &[&id, &id, "agt_000000000000000000000000"],
    )
    .await;
    assert_eq!(offers.len(), 2, "{offers:?}");
    assert_eq!(offers[0]["id"], id.as_str());
    assert!(offers[0]["command"].is_string(), "{offers:?}");
    assert_eq!(offers[1]["skipped"], "No such active server.");
    let (view, audit) = wait_for(&owner, &server.web, "the update to 0.2.0", &log, |v, a| {
        v["agent_version"] == "0.2.0" && count(a, "agent.self_update_applied") == 1
    })
    .await;
    assert_eq!(view["online"], true);
    assert_eq!(count(&audit, "agent.self_update_offered"), 1);
    let page = process::page(&owner, &format!("{}/servers/{id}", server.web)).await;
    let shown = page
        .find(r#"data-testid="agent-version""#)
        .and_then(|i| page[i..].find("</dd>").map(|j| &page[i..i + j]))
        .unwrap_or("(no agent-version on the page)");
    assert!(
        shown.ends_with(">0.2.0"),
        "the server page does not show 0.2.0: {shown}"
    );
    // The servers list filters by agent version (a plain GET form).
    let list_page = |version: &'static str| {
        let url = format!("{}/servers?version={version}", server.web);
        let owner = owner.clone();
        async move { process::page(&owner, &url).await }
    };
    let page = list_page("0.2.0").await;
    assert!(
        page.contains(&format!(r#"data-agent="{id}""#)),
        "0.2.0 filter"
    );
    assert!(
        page.contains(r#"<option value="0.2.0" selected"#),
        "0.2.0 not selected"
    );
    let page = list_page("0.1.0").await;
    assert!(
        !page.contains(&format!(r#"data-agent="{id}""#)),
        "0.1.0 filter"
    );
    assert!(page.contains("No server runs agent 0.1.0."), "0.1.0 filter");

    // The same version again is refused by the control plane already.
    let res = update(&owner, &server.web, &id).await;
    assert_eq!(res.status(), 409);
    let offers = update_selection(&owner, &server.web, &[&id]).await;
    assert_eq!(
        offers[0]["skipped"],
        "This server already runs agent 0.2.0."
    );

    // 2. Signed by another key: the control plane offers it (its own releases
    // directory is consistent), the agent refuses it against its pinned key.
    let other_key = dir.path().join("other.key");
    release_keygen(&other_key);
    let genuine = dir.path().join("genuine");
    std::fs::rename(&releases, &genuine).unwrap();
    release_sign(&other_key, &agent, &releases, Some("0.3.0"));
    let res = update(&owner, &server.web, &id).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let (view, audit) = wait_for(&owner, &server.web, "the refusal", &log, |_, a| {
        count(a, "agent.self_update_refused") == 1
    })
    .await;
    let refusal = &audit
        .iter()
        .find(|(a, _)| a == "agent.self_update_refused")
        .unwrap()
        .1;
    assert!(
        refusal.to_string().contains("signature"),
        "the refusal does not say why: {refusal}"
    );
    assert_eq!(view["agent_version"], "0.2.0");
    // The refusal is the agent's last error, reported with its next metrics.
    let (view, _) = wait_for(&owner, &server.web, "the last error", &log, |v, _| {
        v["health"]["last_error"]
            .as_str()
            .is_some_and(|e| e.starts_with("command refused: ") && e.contains("signature"))
    })
    .await;
    assert!(view["health"]["last_error_at"].is_i64(), "{view}");
    std::fs::remove_dir_all(&releases).unwrap();
    std::fs::rename(&genuine, &releases).unwrap();

    // 3. A release that exits at once: applied, fails to start, rolled back.
    let crashing = dir.path().join("crashing-agent");
    std::fs::write(&crashing, "#!/bin/sh\necho 'broken build' >&2\nexit 1\n").unwrap();
    std::fs::set_permissions(
        &crashing,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    release_sign(&key, &crashing, &releases, Some("0.4.0"));
    let res = update(&owner, &server.web, &id).await;
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    let (view, audit) = wait_for(&owner, &server.web, "the rollback", &log, |v, a| {
        count(a, "agent.self_update_reverted") == 1 && v["online"] == true
    })
    .await;
    assert_eq!(view["agent_version"], "0.2.0", "{view}");
    let revert = &audit
        .iter()
        .find(|(a, _)| a == "agent.self_update_reverted")
        .unwrap()
        .1;
    let revert = revert.to_string();
    assert!(
        revert.contains("0.4.0") && revert.contains("0.2.0"),
        "the revert does not name both versions: {revert}"
    );
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("broken build"),
        "the crashing release never ran"
    );
}
