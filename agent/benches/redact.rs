//! Throughput of output redaction: 64 MiB of log-like task output, with 20 exact
//! secrets and the built-in header and parameter patterns, pushed through a
//! streaming [`Redactor`] in the sandbox's 16 KiB reads. Prints its figures.
//!
//! `cargo bench -p agent --bench redact`

use agent::redact::{Redactor, MARKER};
use std::hint::black_box;
use std::time::Instant;

const TOTAL: usize = 64 << 20;
const CHUNK: usize = 16 << 10;
const SECRETS: usize = 20;
const RUNS: usize = 3;

/// A small deterministic generator (xorshift64*), so every run sees the same input.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn secrets(rng: &mut Rng) -> Vec<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    (0..SECRETS)
        .map(|i| {
            let len = 12 + rng.below(29);
            let body: String = (0..len)
                .map(|_| char::from(ALPHABET[rng.below(ALPHABET.len())]))
                .collect();
            match i % 4 {
                0 => format!("ghp_{body}"),
                1 => format!("AKIA{body}"),
                2 => format!("sk-live-{body}"),
                _ => body,
            }
        })
        .collect()
}

/// Log lines like a deployment script's: mostly ordinary text, about one line in
/// 200 with a secret, one in 500 with an Authorization header, one in 500 with a
/// token in a URL.
fn log(rng: &mut Rng, secrets: &[String]) -> Vec<u8> {
    const WORDS: &[&str] = &[
        "connecting",
        "to",
        "database",
        "replica",
        "at",
        "10.0.4.17:5432",
        "applied",
        "migration",
        "user",
        "service",
        "restarted",
        "nginx",
        "config",
        "reloaded",
        "GET",
        "/api/v1/status",
        "200",
        "in",
        "3ms",
        "cache",
        "warmed",
        "pulling",
        "image",
        "registry.example.com/app:1.42.0",
        "layer",
        "sha256:9f86d081884c7d65",
        "done",
        "waiting",
        "for",
        "health",
        "check",
        "passed",
        "rsync",
        "sent",
        "bytes",
        "speedup",
        "is",
        "backup",
        "completed",
        "default",
        "parse",
        "session",
        "counter",
        "connection",
    ];
    const LEVELS: &[&str] = &["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"];
    let mut out = Vec::with_capacity(TOTAL + 4096);
    let mut line = 0u64;
    while out.len() < TOTAL {
        line += 1;
        let (h, m, s) = (line / 3_600_000 % 24, line / 60_000 % 60, line / 1000 % 60);
        let level = LEVELS[rng.below(LEVELS.len())];
        out.extend_from_slice(
            format!(
                "2026-05-04T{h:02}:{m:02}:{s:02}.{:03}Z {level:5} deploy[{}]:",
                line % 1000,
                4000 + line % 97
            )
            .as_bytes(),
        );
        for _ in 0..4 + rng.below(10) {
            out.push(b' ');
            out.extend_from_slice(WORDS[rng.below(WORDS.len())].as_bytes());
        }
        match rng.below(1000) {
            0..=4 => {
                out.extend_from_slice(b" using key ");
                out.extend_from_slice(secrets[rng.below(secrets.len())].as_bytes());
            }
            5..=6 => out.extend_from_slice(b"\n> Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkZXBsb3kifQ.c2lnbmF0dXJl"),
            7..=8 => out.extend_from_slice(b" GET https://api.example.com/v2/items?page=3&access_token=abc123def456&sort=asc"),
            _ => {}
        }
        out.push(b'\n');
    }
    out.truncate(TOTAL);
    out
}

fn markers(out: &[u8]) -> usize {
    out.windows(MARKER.len()).filter(|w| *w == MARKER).count()
}

/// Streams `input` through a fresh redactor; returns the output length, the
/// marker count and the best time of [`RUNS`].
fn measure(redactor: &Redactor, input: &[u8]) -> (usize, usize, f64) {
    let mut best = f64::MAX;
    let mut result = (0, 0);
    for _ in 0..RUNS {
        let mut r = redactor.fresh();
        let mut out = Vec::with_capacity(input.len() + 4096);
        let start = Instant::now();
        for chunk in input.chunks(CHUNK) {
            r.push_into(black_box(chunk), &mut out);
        }
        out.extend_from_slice(&r.finish());
        let secs = start.elapsed().as_secs_f64();
        best = best.min(secs);
        result = (out.len(), markers(&out));
        black_box(&out);
    }
    (result.0, result.1, best)
}

fn report(label: &str, input: &[u8], (out_len, markers, secs): (usize, usize, f64)) {
    let mib = input.len() as f64 / f64::from(1 << 20);
    println!(
        "{label:<34} {:>8.1} MiB/s  {:>7.3} ms/MiB  ({mib:.0} MiB in {:.1} ms, best of {RUNS}; {markers} markers, output {:.1} MiB)",
        mib / secs,
        secs * 1000.0 / mib,
        secs * 1000.0,
        out_len as f64 / f64::from(1 << 20),
    );
}

fn main() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let secrets = secrets(&mut rng);
    let input = log(&mut rng, &secrets);
    let with_secrets = Redactor::new(&secrets);
    println!(
        "redact: {} MiB of log lines, {CHUNK}-byte chunks, {} secrets of {}..{} bytes, holdback {} bytes",
        TOTAL >> 20,
        with_secrets.secret_count(),
        secrets.iter().map(String::len).min().unwrap_or(0),
        secrets.iter().map(String::len).max().unwrap_or(0),
        with_secrets.holdback(),
    );
    report(
        "20 secrets + patterns",
        &input,
        measure(&with_secrets, &input),
    );
    report(
        "patterns only (empty vault)",
        &input,
        measure(&Redactor::new(Vec::<&str>::new()), &input),
    );
    let binary: Vec<u8> = (0..TOTAL).map(|_| (rng.next() >> 56) as u8).collect();
    report(
        "20 secrets, random bytes",
        &binary,
        measure(&with_secrets, &binary),
    );
}
