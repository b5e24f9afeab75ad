//! Login cost: argon2id hashing and verification with the production
//! parameters, and a whole email/password login against a SQLite store.
//! Prints figures; asserts nothing about time.
//!
//! Run: `cargo bench -p control --bench login`

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use control::access::RequestMeta;
use control::testing::TestDb;
use control::{accounts, password, Role, Timestamp};
use secrecy::SecretString;

const RUNS: usize = 30;
const PASSWORD: &str = "correct horse battery staple";

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    println!(
        "{name:<34} n={:<3} median {:>7.2} ms  mean {:>7.2} ms  p90 {:>7.2} ms  min {:>7.2} ms",
        samples.len(),
        ms(samples[samples.len() / 2]),
        mean,
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[0]),
    );
}

async fn time<F, Fut>(mut f: F) -> Vec<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    f().await; // warm-up
    let mut out = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let start = Instant::now();
        f().await;
        out.push(start.elapsed());
    }
    out
}

#[tokio::main]
async fn main() {
    password::warm_up();
    let hashed = password::hash(SecretString::from(PASSWORD)).await.unwrap();
    report(
        "argon2id hash (m=19MiB,t=2,p=1)",
        time(|| async {
            password::hash(SecretString::from(PASSWORD)).await.unwrap();
        })
        .await,
    );
    report(
        "argon2id verify, known account",
        time(|| async {
            assert!(
                password::verify(SecretString::from(PASSWORD), Some(hashed.clone()))
                    .await
                    .unwrap()
            );
        })
        .await,
    );
    report(
        "argon2id verify, unknown (dummy)",
        time(|| async {
            assert!(!password::verify(SecretString::from(PASSWORD), None)
                .await
                .unwrap());
        })
        .await,
    );

    let db = TestDb::sqlite().await;
    accounts::add_user_cli(
        &control::access::Operator::command_line(db.store.clone()),
        "Acme",
        "ada@example.com",
        Role::Owner,
        SecretString::from(PASSWORD),
        Timestamp::now(),
    )
    .await
    .unwrap();
    let meta = RequestMeta::new("192.0.2.1", "bench");
    report(
        "login() success, SQLite",
        time(|| async {
            let signed_in = accounts::login(
                &db.store,
                "ada@example.com",
                SecretString::from(PASSWORD),
                &meta,
                Timestamp::now(),
            )
            .await
            .unwrap();
            assert!(matches!(signed_in, accounts::SignIn::Done(_)));
        })
        .await,
    );
    // Failures from many addresses so the throttle does not cut in.
    let mut n = 0u32;
    report(
        "login() unknown user, SQLite",
        time(|| {
            n += 1;
            let meta = RequestMeta::new(format!("198.51.100.{}", n % 250), "bench");
            let email = format!("nobody{n}@example.com");
            let store = db.store.clone();
            async move {
                accounts::login(
                    &store,
                    &email,
                    SecretString::from(PASSWORD),
                    &meta,
                    Timestamp::now(),
                )
                .await
                .unwrap_err();
            }
        })
        .await,
    );
}
