//! Cost of sealing and opening a command, next to the primitives it is made of.
//!
//! `cargo bench -p channel --bench seal` prints median and mean per operation over
//! `ITERATIONS` runs (after a warm-up), then how much `seal_command` and
//! `open_command` cost beyond the sum of their primitives (canonical encoding, key id
//! and replay checks, copies). Figures only; nothing here asserts on time.
//!
//! "x-wing decapsulate (x-wing crate)" is that crate's decapsulation, which expands
//! the secret key's seed every time; `KemSecretKey` keeps its key expanded, so
//! `open_command` can cost less than the sum of the primitives listed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::ChaCha20Poly1305;
use channel::{
    open_command, seal_command, CommandHeader, KemSecretKey, ReplayGuard, SealedCommand, SigningKey,
};
use hkdf::Hkdf;
use sha2::Sha256;
use std::hint::black_box;
use std::time::Instant;
use x_wing::{Encapsulate, TryDecapsulate};

const ITERATIONS: usize = 2000;
const WARMUP: usize = 200;
const PAYLOAD_BYTES: usize = 1024;
/// What `seal_command` signs for a 1 KiB payload and the ids below: header, key ids, 1120-byte KEM
/// ciphertext, nonce and 1040-byte AEAD ciphertext, with length prefixes.
const SIGNED_BYTES: usize = 2_427;
const NOW: i64 = 1_760_000_000_000;

struct Stats {
    name: &'static str,
    median_us: f64,
    mean_us: f64,
}

fn measure<T>(name: &'static str, mut op: impl FnMut() -> T) -> Stats {
    for _ in 0..WARMUP {
        black_box(op());
    }
    let mut ns: Vec<u128> = Vec::with_capacity(ITERATIONS);
    for _ in 0..ITERATIONS {
        let t = Instant::now();
        black_box(op());
        ns.push(t.elapsed().as_nanos());
    }
    ns.sort_unstable();
    let median = if ITERATIONS.is_multiple_of(2) {
        (ns[ITERATIONS / 2 - 1] + ns[ITERATIONS / 2]) as f64 / 2.0
    } else {
        ns[ITERATIONS / 2] as f64
    };
    let mean = ns.iter().sum::<u128>() as f64 / ITERATIONS as f64;
    Stats {
        name,
        median_us: median / 1000.0,
        mean_us: mean / 1000.0,
    }
}

fn header(sequence: u64) -> CommandHeader {
    CommandHeader {
        agent_id: "agent-01j9zq7k4m".into(),
        command_id: format!("7d444840-9dc0-11d1-b245-{sequence:012x}"),
        sequence,
        issued_at: NOW,
        expires_at: NOW + 15 * 60_000,
        kind: "service/restart".into(),
        operation: None,
    }
}

fn main() {
    let mut rng = channel::os_rng();
    let agent_kem = KemSecretKey::generate();
    let server_signing = SigningKey::generate();
    let payload = vec![0x5Au8; PAYLOAD_BYTES];

    // Raw primitives, with the same inputs the envelope uses.
    let xw_public = x_wing::EncapsulationKey::try_from(agent_kem.public_key().as_bytes())
        .expect("a valid key's own bytes parse");
    let mut seed = [0u8; 32];
    seed.copy_from_slice(agent_kem.to_bytes().as_slice());
    let xw_secret = x_wing::DecapsulationKeyRejectNonContrib::from(seed);
    let (xw_ct, _) = xw_public.encapsulate_with_rng(&mut rng);

    let ed_secret = ed25519_dalek::SigningKey::from_bytes(&server_signing.to_bytes());
    let ed_public = ed_secret.verifying_key();
    let message = vec![0xC3u8; SIGNED_BYTES];
    let signature = ed25519_dalek::Signer::sign(&ed_secret, &message);

    let aead = ChaCha20Poly1305::new(&chacha20poly1305::Key::from([7u8; 32]));
    let nonce = chacha20poly1305::Nonce::from([1u8; 12]);
    let aad = [0x11u8; 146];
    let aead_ct = aead
        .encrypt(
            &nonce,
            Payload {
                msg: &payload,
                aad: &aad,
            },
        )
        .expect("1 KiB is within ChaCha20-Poly1305 limits");

    let ikm = [0x22u8; 32];
    let info = [0x33u8; 187];

    let mut stats = vec![
        measure("x-wing encapsulate", || {
            xw_public.encapsulate_with_rng(&mut rng)
        }),
        measure("x-wing decapsulate (x-wing crate)", || {
            xw_secret.try_decapsulate(&xw_ct)
        }),
        measure("ed25519 sign (2.4 KiB)", || {
            ed25519_dalek::Signer::sign(&ed_secret, &message)
        }),
        measure("ed25519 verify_strict (2.4 KiB)", || {
            ed_public.verify_strict(&message, &signature)
        }),
        measure("chacha20-poly1305 seal 1 KiB", || {
            aead.encrypt(
                &nonce,
                Payload {
                    msg: &payload,
                    aad: &aad,
                },
            )
        }),
        measure("chacha20-poly1305 open 1 KiB", || {
            aead.decrypt(
                &nonce,
                Payload {
                    msg: &aead_ct,
                    aad: &aad,
                },
            )
        }),
        measure("hkdf-sha256 (32-byte key)", || {
            let mut okm = [0u8; 32];
            let ok = Hkdf::<Sha256>::new(Some(b"pilothouse/command/v1"), &ikm)
                .expand(&info, &mut okm)
                .is_ok();
            (ok, okm)
        }),
    ];

    // A guard with a full journal, as on a long-running agent.
    let mut guard = ReplayGuard::new();
    for seq in 1..=channel::replay::REPLAY_JOURNAL_CAPACITY as u64 {
        let sealed = seal_command(
            &header(seq),
            b"",
            agent_kem.public_key(),
            &server_signing,
            &mut rng,
        )
        .expect("valid header");
        let opened = open_command(
            &sealed,
            "agent-01j9zq7k4m",
            &agent_kem,
            server_signing.verifying_key(),
            &guard,
            NOW,
        )
        .expect("fresh command opens");
        guard.commit(&opened);
    }
    let next = header(channel::replay::REPLAY_JOURNAL_CAPACITY as u64 + 1);

    stats.push(measure("seal_command (1 KiB)", || {
        seal_command(
            &next,
            &payload,
            agent_kem.public_key(),
            &server_signing,
            &mut rng,
        )
    }));
    let sealed = seal_command(
        &next,
        &payload,
        agent_kem.public_key(),
        &server_signing,
        &mut rng,
    )
    .expect("valid header");
    stats.push(measure("open_command (1 KiB, replay check)", || {
        open_command(
            &sealed,
            "agent-01j9zq7k4m",
            &agent_kem,
            server_signing.verifying_key(),
            &guard,
            NOW,
        )
    }));
    let json = serde_json::to_vec(&sealed).expect("envelope serializes");
    stats.push(measure("envelope to JSON", || serde_json::to_vec(&sealed)));
    stats.push(measure("SealedCommand::from_json", || {
        SealedCommand::from_json(&json)
    }));
    stats.push(measure("KemSecretKey::from_bytes (expand)", || {
        KemSecretKey::from_bytes(&seed)
    }));

    println!(
        "channel seal/open benchmark: {ITERATIONS} iterations after {WARMUP} warm-up, \
         payload {PAYLOAD_BYTES} B, envelope JSON {} B",
        json.len()
    );
    println!("{:<38} {:>12} {:>12}", "operation", "median µs", "mean µs");
    for s in &stats {
        println!("{:<38} {:>12.2} {:>12.2}", s.name, s.median_us, s.mean_us);
    }

    let median = |name: &str| {
        stats
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.median_us)
            .unwrap_or(f64::NAN)
    };
    let seal_parts = median("x-wing encapsulate")
        + median("ed25519 sign (2.4 KiB)")
        + median("chacha20-poly1305 seal 1 KiB")
        + median("hkdf-sha256 (32-byte key)");
    let open_parts = median("ed25519 verify_strict (2.4 KiB)")
        + median("x-wing decapsulate (x-wing crate)")
        + median("chacha20-poly1305 open 1 KiB")
        + median("hkdf-sha256 (32-byte key)");
    let seal = median("seal_command (1 KiB)");
    let open = median("open_command (1 KiB, replay check)");
    println!();
    println!(
        "seal_command: {seal:.2} µs vs encaps+sign+aead+hkdf {seal_parts:.2} µs: overhead {:+.1}%",
        (seal / seal_parts - 1.0) * 100.0
    );
    println!(
        "open_command: {open:.2} µs vs verify+decaps+aead+hkdf {open_parts:.2} µs: {:+.1}% \
         (open_command decapsulates with the key expanded once; the x-wing crate's \
         decapsulation expands its seed each time)",
        (open / open_parts - 1.0) * 100.0
    );
}
