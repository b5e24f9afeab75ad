//! `pilothouse audit ...` end to end with the real binary on SQLite: export,
//! checkpoints, the audit key, and the offline verifier, which must accept an
//! untouched export and name the exact event for each kind of tampering.
//! The tampering is done here, playing an attacker with write access to the
//! export file (and, for the rewritten history, to the whole chain).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Output;

#[path = "helpers/cli.rs"]
mod cli_helpers;
use cli_helpers::{pilothouse, text};

struct Fleet {
    dir: tempfile::TempDir,
}

impl Fleet {
    fn data(&self) -> &str {
        self.dir.path().to_str().unwrap()
    }

    fn add_user(&self, email: &str) {
        let out = pilothouse(
            &[
                "admin",
                "add-user",
                "--data-dir",
                self.data(),
                "--org",
                "Acme",
                "--email",
                email,
                "--role",
                "member",
            ],
            "correct horse battery staple\n",
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
    }

    fn run(&self, args: &[&str]) -> Output {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--data-dir", self.data()]);
        pilothouse(&all, "")
    }

    /// Runs and writes stdout to `file` in the data directory; returns its path.
    fn save(&self, args: &[&str], file: &str) -> std::path::PathBuf {
        let out = self.run(args);
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let path = self.dir.path().join(file);
        std::fs::write(&path, &out.stdout).unwrap();
        path
    }
}

fn verify(export: &Path, checkpoints: &Path, key: &str) -> Output {
    pilothouse(
        &[
            "audit",
            "verify",
            "--export",
            export.to_str().unwrap(),
            "--checkpoints",
            checkpoints.to_str().unwrap(),
            "--key",
            key,
        ],
        "",
    )
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn write_lines(path: &Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

/// Recomputes every hash from `from` (0-based line) on, as someone who
/// rewrote the database would: the chain is consistent again.
fn rechain(lines: &mut [String], from: usize) {
    let mut prev: String = if from == 0 {
        control::audit::GENESIS.to_string()
    } else {
        let e: serde_json::Value = serde_json::from_str(&lines[from - 1]).unwrap();
        e["hash"].as_str().unwrap().to_string()
    };
    for line in lines.iter_mut().skip(from) {
        let mut e: serde_json::Value = serde_json::from_str(line).unwrap();
        let s = |k: &str| e[k].as_str().unwrap().to_string();
        let hash = control::audit_export::chain_hash(
            &prev,
            e["org"].as_i64().unwrap(),
            e["seq"].as_i64().unwrap(),
            e["at"].as_i64().unwrap(),
            e["actor_user_id"].as_i64(),
            &s("actor"),
            &s("ip"),
            &s("user_agent"),
            &s("action"),
            &s("target"),
            &s("details"),
        );
        e["prev_hash"] = serde_json::Value::String(prev.clone());
        e["hash"] = serde_json::Value::String(hash.clone());
        *line = serde_json::to_string(&e).unwrap();
        prev = hash;
    }
}

#[test]
fn an_export_verifies_offline_and_every_tampering_is_named() {
    let f = Fleet {
        dir: tempfile::tempdir().unwrap(),
    };
    for i in 0..4 {
        f.add_user(&format!("user{i}@example.com"));
    }
    let key_out = f.run(&["key"]);
    assert!(key_out.status.success(), "{}", text(&key_out.stderr));
    let key = text(&key_out.stdout).trim().to_string();
    let key_file = f.dir.path().join("audit.pub");
    std::fs::write(&key_file, format!("{key}\n")).unwrap();
    // A first checkpoint over the chain as it stands, then more events.
    f.save(&["checkpoints", "--org", "Acme", "--sign-now"], "c1.jsonl");
    for i in 4..6 {
        f.add_user(&format!("user{i}@example.com"));
    }
    let checkpoints = f.save(
        &["checkpoints", "--org", "Acme", "--sign-now"],
        "checkpoints.jsonl",
    );
    assert_eq!(lines(&checkpoints).len(), 2, "two checkpoints");
    let export = f.save(
        &["export", "--org", "Acme", "--format", "jsonl"],
        "export.jsonl",
    );
    let events = lines(&export);
    assert!(events.len() >= 8, "{} events", events.len());
    let last: serde_json::Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(
        last["action"], "audit.exported",
        "the export records itself"
    );

    // Untouched: verified, with the key given as text or as a file.
    for k in [key.as_str(), key_file.to_str().unwrap()] {
        let ok = verify(&export, &checkpoints, k);
        assert!(ok.status.success(), "{}", text(&ok.stderr));
        assert!(
            text(&ok.stdout).contains(&format!("verified: {} events", events.len())),
            "{}",
            text(&ok.stdout)
        );
        assert!(
            text(&ok.stdout).contains("2 checkpoints matched"),
            "{}",
            text(&ok.stdout)
        );
    }

    let tampered = f.dir.path().join("tampered.jsonl");
    let refused = |expected: &str| {
        let out = verify(&tampered, &checkpoints, &key);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stdout));
        assert!(
            text(&out.stderr).contains(expected),
            "expected {expected:?}: {}",
            text(&out.stderr)
        );
    };

    // A changed field: named by its event.
    let mut changed = events.clone();
    changed[2] = changed[2].replace("user1@example.com", "someone@example.com");
    assert_ne!(changed[2], events[2]);
    write_lines(&tampered, &changed);
    refused("event 3 was changed");

    // A deleted event in the middle.
    let mut gap = events.clone();
    gap.remove(3);
    write_lines(&tampered, &gap);
    refused("after event 3 comes event 5: events 4 to 4 are missing");

    // A changed event with every later hash recomputed, as someone with
    // write access to the database could: the chain holds, the checkpoints
    // catch it.
    let mut rewritten = events.clone();
    rewritten[2] = rewritten[2].replace("user1@example.com", "someone@example.com");
    rechain(&mut rewritten, 2);
    write_lines(&tampered, &rewritten);
    refused("is not the one the checkpoint signed");

    // A truncated tail, against the later checkpoint.
    let c2: serde_json::Value = serde_json::from_str(&lines(&checkpoints)[1]).unwrap();
    let count = c2["count"].as_i64().unwrap() as usize;
    write_lines(&tampered, &events[..count - 1]);
    refused(&format!("the export ends at event {}", count - 1));

    // A forged checkpoint: its count changed, or signed by another key.
    write_lines(&tampered, &events);
    let forged = f.dir.path().join("forged.jsonl");
    let mut cps = lines(&checkpoints);
    let mut c: serde_json::Value = serde_json::from_str(&cps[1]).unwrap();
    c["count"] = serde_json::json!(count - 1);
    cps[1] = serde_json::to_string(&c).unwrap();
    write_lines(&forged, &cps);
    let out = verify(&tampered, &forged, &key);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has a bad signature"),
        "{}",
        text(&out.stderr)
    );
    let other = Fleet {
        dir: tempfile::tempdir().unwrap(),
    };
    let other_key = text(&other.run(&["key"]).stdout).trim().to_string();
    let out = verify(&tampered, &checkpoints, &other_key);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("has a bad signature"),
        "{}",
        text(&out.stderr)
    );

    // Unusable input: exit 2 with a sentence.
    let out = verify(&tampered, &checkpoints, "not-a-key");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--key is not an audit public key"),
        "{}",
        text(&out.stderr)
    );
    let out = verify(&f.dir.path().join("missing.jsonl"), &checkpoints, &key);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("cannot read"),
        "{}",
        text(&out.stderr)
    );
    write_lines(&tampered, &["{not json".to_string()]);
    let out = verify(&tampered, &checkpoints, &key);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("line 1 of the export is not an audit event"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn exports_stream_csv_and_refuse_bad_input() {
    let f = Fleet {
        dir: tempfile::tempdir().unwrap(),
    };
    f.add_user("ops@example.com");
    let csv = f.save(
        &["export", "--org", "Acme", "--format", "csv"],
        "export.csv",
    );
    let rows = lines(&csv);
    assert_eq!(rows[0], control::audit_export::CSV_HEADER);
    assert!(rows.len() >= 3, "{rows:?}");
    // Every row ends with the event's hash; details are quoted JSON.
    for r in &rows[1..] {
        let hash = r.rsplit(',').next().unwrap();
        assert!(
            hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
            "{r}"
        );
        assert!(r.contains(",\"{"), "{r}");
    }
    // The time range: nothing before 2000, everything since.
    let none = f.save(
        &[
            "export",
            "--org",
            "Acme",
            "--format",
            "jsonl",
            "--until",
            "2000-01-01",
        ],
        "none.jsonl",
    );
    assert!(lines(&none).is_empty(), "{:?}", lines(&none));
    let since = f.save(
        &[
            "export",
            "--org",
            "Acme",
            "--format",
            "jsonl",
            "--since",
            "2000-01-01T00:00Z",
        ],
        "since.jsonl",
    );
    assert!(lines(&since).len() >= 3);

    for (args, expected) in [
        (
            vec!["export", "--org", "Acme", "--format", "xml"],
            "not an export format",
        ),
        (
            vec![
                "export",
                "--org",
                "Acme",
                "--format",
                "csv",
                "--since",
                "yesterday",
            ],
            "is not a date",
        ),
        (
            vec![
                "export",
                "--org",
                "Acme",
                "--format",
                "csv",
                "--since",
                "2026-02-30",
            ],
            "is not a date",
        ),
        (
            vec!["export", "--org", "Nobody", "--format", "csv"],
            "No organisation named",
        ),
        (
            vec!["checkpoints", "--org", "Nobody"],
            "No organisation named",
        ),
    ] {
        let out = f.run(&args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(expected),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
}
