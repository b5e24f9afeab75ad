//! Offline verification throughput: an export of 1,000,000 events (JSON
//! Lines, as `pilothouse audit export` writes them, from memory) verified
//! against a checkpoint on its last event, next to raw SHA-256 over the same
//! bytes the chain hashes, in the same run. Prints figures; asserts nothing
//! about time.
//!
//! Run: `cargo bench -p control --bench audit_verify -- [EVENTS]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::borrow::Cow;
use std::time::Instant;

use control::audit_export::{self, ExportFormat, ExportedEvent};
use sha2::Digest as _;

fn main() {
    let n: i64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let org = 1;
    let mut export = Vec::with_capacity(n as usize * 420);
    let mut prev = control::audit::GENESIS.to_string();
    let mut hashed_bytes = 0usize;
    let mut preimages: Vec<Vec<u8>> = Vec::new();
    for seq in 1..=n {
        let details = format!(
            r#"{{"command":"cmd_{seq:024x}","kind":"disk_usage","late":false,"state":"succeeded"}}"#
        );
        let target = format!("agent:agt_{:024x}", seq % 1000);
        let at = 1_764_000_000_000 + seq;
        let hash = audit_export::chain_hash(
            &prev,
            org,
            seq,
            at,
            None,
            "agent agt_0",
            "",
            "",
            "command.finished",
            &target,
            &details,
        );
        if preimages.len() < 1000 {
            let content = serde_json::to_vec(&(
                org,
                seq,
                at,
                None::<i64>,
                "agent agt_0",
                "",
                "",
                "command.finished",
                &target,
                &details,
            ))
            .unwrap();
            let mut p = prev.clone().into_bytes();
            p.push(b'\n');
            p.extend_from_slice(&content);
            preimages.push(p);
        }
        let e = ExportedEvent {
            org,
            seq,
            at,
            actor_user_id: None,
            actor: Cow::Borrowed("agent agt_0"),
            ip: Cow::Borrowed(""),
            user_agent: Cow::Borrowed(""),
            action: Cow::Borrowed("command.finished"),
            target: Cow::Borrowed(&target),
            details: Cow::Borrowed(&details),
            prev_hash: Cow::Borrowed(&prev),
            hash: Cow::Borrowed(&hash),
        };
        audit_export::write_event(&mut export, &e, ExportFormat::JsonLines).unwrap();
        prev = hash;
    }
    let per_event: usize = preimages.iter().map(Vec::len).sum::<usize>() / preimages.len();
    hashed_bytes += per_event * n as usize;
    let key = channel::SigningKey::generate();
    let checkpoint = channel::sign_checkpoint(&key, org, n, &prev, 0).unwrap();
    let mut checkpoints = serde_json::to_vec(&checkpoint).unwrap();
    checkpoints.push(b'\n');
    println!(
        "export: {n} events, {:.1} MiB of JSON Lines; each event hashes about {per_event} bytes",
        export.len() as f64 / (1 << 20) as f64
    );

    for round in 1..=3 {
        // Raw SHA-256 over as many bytes as the chain hashes (64-byte hex
        // prev hash, newline, content), one digest per event.
        let t0 = Instant::now();
        let mut sink = 0u8;
        for i in 0..n as usize {
            let d = sha2::Sha256::digest(&preimages[i % preimages.len()]);
            sink ^= d[0];
        }
        let raw = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let verified = audit_export::verify_export(
            &mut &export[..],
            &mut &checkpoints[..],
            key.verifying_key(),
        )
        .unwrap()
        .expect("the export verifies");
        let v = t1.elapsed().as_secs_f64();
        assert_eq!(verified.events, n as u64);
        println!(
            "round {round}: raw SHA-256 {:.2} M digests/s ({:.0} MiB/s, sink {sink}); verify_export {:.2} M events/s ({:.0} MiB/s of export), {:.2} s for {n}",
            n as f64 / raw / 1e6,
            hashed_bytes as f64 / raw / (1 << 20) as f64,
            n as f64 / v / 1e6,
            export.len() as f64 / v / (1 << 20) as f64,
            v
        );
    }
}
