//! Two-factor sign-in, on both backends: enrolment (a code confirms it, ten
//! recovery codes once), a password sign-in that then needs a code, a TOTP
//! code refused the second time (also when two requests race with it), a
//! recovery code that works once (also under a race), wrong codes throttled
//! under concurrent guessing, a stale pending sign-in, the seed and the codes
//! absent from a database dump, a master-key rotation that keeps the seed
//! usable, turning it off only with the password, and an organisation's
//! requirement that holds its Owners and Admins until they set it up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use common::{contains, dump, meta, PASSWORD};
use control::access::{ManageOwners, ReadOrg, MFA_DUE};
use control::accounts::{self, SignIn};
use control::agents::ManageAgents;
use control::mfa::{self, Pending};
use control::operations::settings;
use control::secrets::{self, Keyring};
use control::testing::TestDb;
use control::{ControlError, OrgPolicy, Role, Timestamp};
use secrecy::SecretString;

/// Seconds into a TOTP step, so `now` and `now + 1 s` share it.
const T0: i64 = 1_900_000_005_000;

fn code(seed: &[u8], at: Timestamp) -> String {
    mfa::hotp(seed, mfa::step_at(at) as u64)
}

struct Person {
    db: TestDb,
    ring: Arc<Keyring>,
    _dir: tempfile::TempDir,
    seed: Vec<u8>,
    recovery: Vec<String>,
}

/// An Owner with two-factor on, set up at `T0`.
async fn enrolled(db: TestDb) -> Person {
    let dir = tempfile::tempdir().unwrap();
    let ring = Arc::new(Keyring::open(&dir.path().join("master.key")).unwrap());
    secrets::adopt(&db.store, &ring).await.unwrap();
    let (user, org) = common::add(&db, "Acme", "owner@example.com", Role::Owner).await;
    let actor = common::actor(&db, user, org).await;
    let now = Timestamp(T0);
    assert!(!mfa::status(&actor).await.unwrap().enabled);

    let setup = mfa::begin_enrolment(&actor, &ring, now).await.unwrap();
    assert!(setup.qr_svg.starts_with("<svg "), "{}", setup.qr_svg);
    let seed = mfa::decode_base32(&setup.secret).unwrap();
    assert_eq!(seed.len(), 20);
    // Not in force before it is confirmed: the password alone signs in.
    assert!(matches!(sign_in(&db, now).await.unwrap(), SignIn::Done(_)));
    // A wrong code does not confirm it.
    let wrong = mfa::confirm_enrolment(&actor, &ring, "000000", now).await;
    assert!(
        matches!(wrong, Err(ControlError::Invalid(_))) || code(&seed, now) == "000000",
        "{wrong:?}"
    );
    let recovery = mfa::confirm_enrolment(&actor, &ring, &code(&seed, now), now)
        .await
        .unwrap();
    assert_eq!(recovery.len(), mfa::RECOVERY_CODES);
    let status = mfa::status(&actor).await.unwrap();
    assert!(status.enabled);
    assert_eq!(status.recovery_codes_left, 10);
    // A second set-up is refused while it is on.
    assert!(matches!(
        mfa::begin_enrolment(&actor, &ring, now).await,
        Err(ControlError::Conflict(_))
    ));
    Person {
        db,
        ring,
        _dir: dir,
        seed,
        recovery,
    }
}

async fn sign_in(db: &TestDb, now: Timestamp) -> Result<SignIn, ControlError> {
    accounts::login(
        &db.store,
        "owner@example.com",
        SecretString::from(PASSWORD),
        &meta(),
        now,
    )
    .await
}

async fn pending(db: &TestDb, now: Timestamp) -> Pending {
    match sign_in(db, now).await.unwrap() {
        SignIn::SecondFactor(p) => p,
        SignIn::Done(_) => panic!("signed in without the second factor"),
    }
}

async fn actions(db: &TestDb) -> Vec<(String, String)> {
    sqlx::query_as("SELECT action, details FROM audit_events ORDER BY seq")
        .fetch_all(db.store.pool())
        .await
        .unwrap()
}

async fn a_code_signs_in_once(db: TestDb) {
    let p = enrolled(db).await;
    let later = Timestamp(T0 + 60_000);
    let pend = pending(&p.db, later).await;
    let now_code = code(&p.seed, later);
    let done = mfa::verify_sign_in(&p.db.store, &p.ring, pend, &now_code, &meta(), later)
        .await
        .unwrap();
    assert_eq!((done.user, done.org), (pend.user, pend.org));
    // The same code again, from a new password sign-in: refused.
    let pend = pending(&p.db, later).await;
    let again = mfa::verify_sign_in(&p.db.store, &p.ring, pend, &now_code, &meta(), later).await;
    assert!(
        matches!(&again, Err(ControlError::Unauthenticated(m)) if m == mfa::WRONG_CODE),
        "{again:?}"
    );
    // The previous step's code is older than the one used: refused too.
    let previous = code(&p.seed, Timestamp(later.0 - 30_000));
    let old = mfa::verify_sign_in(&p.db.store, &p.ring, pend, &previous, &meta(), later).await;
    assert!(
        matches!(old, Err(ControlError::Unauthenticated(_))),
        "{old:?}"
    );
    // The code used to confirm the set-up does not sign in either.
    let first = code(&p.seed, Timestamp(T0));
    let replay = mfa::verify_sign_in(&p.db.store, &p.ring, pend, &first, &meta(), later).await;
    assert!(matches!(replay, Err(ControlError::Unauthenticated(_))));

    let log = actions(&p.db).await;
    assert!(log
        .iter()
        .any(|(a, d)| a == "user.mfa_enabled" && d.contains("totp")));
    assert!(
        log.iter()
            .any(|(a, d)| a == "user.login" && d.contains("\"second_factor\":\"totp\"")),
        "{log:?}"
    );
    // Failures are recorded from a task of their own: wait for the three.
    let mut failed = 0;
    for _ in 0..100 {
        failed = actions(&p.db)
            .await
            .iter()
            .filter(|(a, d)| a == "user.login_failed" && d.contains("wrong_code"))
            .count();
        if failed >= 3 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(failed, 3, "three wrong codes, three audited failures");
}

async fn racing_with_one_code_lets_one_in(db: TestDb) {
    let p = enrolled(db).await;
    let at = Timestamp(T0 + 90_000);
    let totp = code(&p.seed, at);
    let recovery = p.recovery[0].clone();
    for code in [totp, recovery] {
        let pend = pending(&p.db, at).await;
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (store, ring, code) = (p.db.store.clone(), p.ring.clone(), code.clone());
            tasks.push(tokio::spawn(async move {
                mfa::verify_sign_in(&store, &ring, pend, &code, &meta(), at).await
            }));
        }
        let mut ok = 0;
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => ok += 1,
                // Refused as used, or throttled by the losers' failures.
                Err(ControlError::Unauthenticated(_) | ControlError::Throttled(_)) => {}
                Err(e) => panic!("unexpected {e:?}"),
            }
        }
        assert_eq!(
            ok, 1,
            "exactly one of eight racing requests with {code} got in"
        );
    }
}

async fn a_recovery_code_works_once(db: TestDb) {
    let p = enrolled(db).await;
    let at = Timestamp(T0 + 120_000);
    let pend = pending(&p.db, at).await;
    // Typed in lower case without dashes: still the code.
    let typed = p.recovery[3].replace('-', "").to_lowercase();
    mfa::verify_sign_in(&p.db.store, &p.ring, pend, &typed, &meta(), at)
        .await
        .unwrap();
    let again = mfa::verify_sign_in(&p.db.store, &p.ring, pend, &p.recovery[3], &meta(), at).await;
    assert!(matches!(again, Err(ControlError::Unauthenticated(_))));
    let owner = common::actor(&p.db, pend.user, pend.org).await;
    assert_eq!(mfa::status(&owner).await.unwrap().recovery_codes_left, 9);
    let log = actions(&p.db).await;
    assert!(log
        .iter()
        .any(|(a, d)| a == "user.login" && d.contains("recovery_code")));
}

async fn wrong_codes_are_throttled_under_concurrent_guessing(db: TestDb) {
    let p = enrolled(db).await;
    let at = Timestamp(T0 + 150_000);
    let pend = pending(&p.db, at).await;
    let right = code(&p.seed, at);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let (store, ring) = (p.db.store.clone(), p.ring.clone());
        // Forty different wrong six-digit codes.
        let mut guess = format!("{:06}", 100_000 + i * 7919);
        if guess == right {
            guess = format!("{:06}", 999_999 - i);
        }
        tasks.push(tokio::spawn(async move {
            mfa::verify_sign_in(&store, &ring, pend, &guess, &meta(), at).await
        }));
    }
    let (mut wrong, mut throttled) = (0, 0);
    for t in tasks {
        match t.await.unwrap() {
            Err(ControlError::Unauthenticated(_)) => wrong += 1,
            Err(ControlError::Throttled(_)) => throttled += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    let limit = control::throttle::MFA.max_failures;
    assert_eq!(wrong, limit, "exactly the limit got past the throttle");
    assert_eq!(throttled, 40 - limit);
    // Now even the right code waits.
    let blocked = mfa::verify_sign_in(&p.db.store, &p.ring, pend, &right, &meta(), at).await;
    assert!(
        matches!(blocked, Err(ControlError::Throttled(_))),
        "{blocked:?}"
    );
}

async fn a_stale_sign_in_needs_the_password_again(db: TestDb) {
    let p = enrolled(db).await;
    let at = Timestamp(T0 + 30_000);
    let pend = pending(&p.db, at).await;
    let late = Timestamp(at.0 + mfa::PENDING_SECS * 1000);
    let res = mfa::verify_sign_in(
        &p.db.store,
        &p.ring,
        pend,
        &code(&p.seed, late),
        &meta(),
        late,
    )
    .await;
    assert!(
        matches!(&res, Err(ControlError::Unauthenticated(m)) if m.contains("too long")),
        "{res:?}"
    );
}

async fn seeds_and_codes_are_not_in_a_dump_and_survive_rotation(db: TestDb) {
    let p = enrolled(db).await;
    let dumped = dump(&p.db);
    let seed_b32 = {
        // What the person typed into the app, and the raw seed in hex.
        let b32: String = control::mfa::base32(&p.seed);
        (b32, hex_of(&p.seed))
    };
    assert!(!contains(&dumped, &seed_b32.0), "the seed is in the dump");
    assert!(
        !contains(&dumped, &seed_b32.1),
        "the seed is in the dump (hex)"
    );
    for code in &p.recovery {
        assert!(!contains(&dumped, code), "a recovery code is in the dump");
        assert!(!contains(&dumped, &code.replace('-', "")));
    }

    // A rotation re-wraps the seed's data key; the seed still checks codes.
    let rotation = secrets::rotate_master_key(&p.db.store, &p.ring)
        .await
        .unwrap();
    assert_eq!(rotation.rewrapped, 1, "{rotation:?}");
    let key_id: String = sqlx::query_scalar("SELECT master_key_id FROM user_totp")
        .fetch_one(p.db.store.pool())
        .await
        .unwrap();
    assert_eq!(key_id, rotation.new_key_id);
    let at = Timestamp(T0 + 60_000);
    let pend = pending(&p.db, at).await;
    mfa::verify_sign_in(&p.db.store, &p.ring, pend, &code(&p.seed, at), &meta(), at)
        .await
        .unwrap();

    // A tampered seed is an error that names its row, never a wrong answer.
    sqlx::query(
        "UPDATE user_totp SET ciphertext = \
         CASE WHEN substr(ciphertext, 1, 2) = '00' THEN '11' ELSE '00' END || substr(ciphertext, 3)",
    )
        .execute(p.db.store.pool())
        .await
        .unwrap();
    let at = Timestamp(T0 + 90_000);
    let pend = pending(&p.db, at).await;
    let res =
        mfa::verify_sign_in(&p.db.store, &p.ring, pend, &code(&p.seed, at), &meta(), at).await;
    assert!(
        matches!(&res, Err(ControlError::Internal(m)) if m.to_string().contains("totp_") && m.to_string().contains("does not decrypt")),
        "{res:?}"
    );
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn turning_it_off_needs_the_password(db: TestDb) {
    let p = enrolled(db).await;
    let at = Timestamp(T0 + 60_000);
    let pend = pending(&p.db, at).await;
    let owner = common::actor(&p.db, pend.user, pend.org).await;
    let wrong = mfa::disable(&owner, SecretString::from("not the password"), at).await;
    assert!(matches!(wrong, Err(ControlError::Invalid(_))), "{wrong:?}");
    assert!(mfa::status(&owner).await.unwrap().enabled);
    mfa::disable(&owner, SecretString::from(PASSWORD), at)
        .await
        .unwrap();
    assert!(!mfa::status(&owner).await.unwrap().enabled);
    assert!(matches!(sign_in(&p.db, at).await.unwrap(), SignIn::Done(_)));
    let log = actions(&p.db).await;
    assert!(log.iter().any(|(a, _)| a == "user.mfa_disabled"));
}

/// Sets up two-factor for `actor` at `at`.
async fn enrol(actor: &control::access::Actor, ring: &Keyring, at: Timestamp) {
    let setup = mfa::begin_enrolment(actor, ring, at).await.unwrap();
    let seed = mfa::decode_base32(&setup.secret).unwrap();
    mfa::confirm_enrolment(actor, ring, &code(&seed, at), at)
        .await
        .unwrap();
}

fn refused_for_mfa<T>(r: Result<T, ControlError>) {
    let e = r.err();
    assert!(
        matches!(&e, Some(ControlError::Forbidden(m)) if m == MFA_DUE),
        "{e:?}"
    );
}

async fn requiring_it_holds_owners_and_admins_until_they_set_it_up(db: TestDb) {
    let p = enrolled(db).await;
    let at = Timestamp(T0 + 60_000);
    let pend = pending(&p.db, at).await;
    let org = pend.org;
    let owner = common::actor(&p.db, pend.user, org).await;
    let (admin_id, _) = common::add(&p.db, "Acme", "admin@example.com", Role::Admin).await;
    let (second_id, _) = common::add(&p.db, "Acme", "second@example.com", Role::Owner).await;
    let (member_id, _) = common::add(&p.db, "Acme", "member@example.com", Role::Member).await;
    // Built before the rule: its proof is checked again in the write.
    let early_admin = common::actor(&p.db, admin_id, org).await;
    let early_auth = early_admin.authorize::<ManageAgents>().unwrap();

    // Only an Owner sets it, and only one who has it on.
    assert!(matches!(
        early_admin.authorize::<ManageOwners>(),
        Err(ControlError::Forbidden(_))
    ));
    let second = common::actor(&p.db, second_id, org).await;
    let not_yet = mfa::set_required(&second.authorize::<ManageOwners>().unwrap(), true, at).await;
    assert!(
        matches!(not_yet, Err(ControlError::Conflict(_))),
        "{not_yet:?}"
    );
    let rule = owner.authorize::<ManageOwners>().unwrap();
    mfa::set_required(&rule, true, at).await.unwrap();
    assert!(matches!(
        mfa::set_required(&rule, true, at).await,
        Err(ControlError::Conflict(_))
    ));

    // The Admin and the other Owner without it can do nothing else now:
    // the early proof fails in its transaction, a new actor at once.
    refused_for_mfa(settings::set_policy(&early_auth, OrgPolicy::default(), at).await);
    let admin = common::actor(&p.db, admin_id, org).await;
    assert!(admin.mfa_due());
    refused_for_mfa(admin.authorize::<ReadOrg>());
    refused_for_mfa(admin.authorize::<ManageAgents>());
    let second = common::actor(&p.db, second_id, org).await;
    refused_for_mfa(second.authorize::<ReadOrg>());
    let status = mfa::status(&admin).await.unwrap();
    assert!(status.org_requires && status.required && !status.enabled && !status.can_require);
    // A Member and the Owner who has it are not held.
    let member = common::actor(&p.db, member_id, org).await;
    assert!(!member.mfa_due());
    member.authorize::<ReadOrg>().unwrap();
    let status = mfa::status(&member).await.unwrap();
    assert!(status.org_requires && !status.required);
    owner.authorize::<ManageAgents>().unwrap();

    // Once the Admin sets it up, the Admin is let through again, and cannot
    // turn it off while it is required.
    enrol(&admin, &p.ring, at).await;
    let admin = common::actor(&p.db, admin_id, org).await;
    assert!(!admin.mfa_due());
    settings::set_policy(
        &admin.authorize::<ManageAgents>().unwrap(),
        OrgPolicy::default(),
        at,
    )
    .await
    .unwrap();
    let kept = mfa::disable(&admin, SecretString::from(PASSWORD), at).await;
    assert!(
        matches!(&kept, Err(ControlError::Conflict(m)) if m.contains("Acme requires")),
        "{kept:?}"
    );

    // Not required any more: the other Owner is let through, the Admin may
    // turn it off.
    mfa::set_required(&rule, false, at).await.unwrap();
    common::actor(&p.db, second_id, org)
        .await
        .authorize::<ReadOrg>()
        .unwrap();
    mfa::disable(&admin, SecretString::from(PASSWORD), at)
        .await
        .unwrap();

    let log = actions(&p.db).await;
    let changes: Vec<serde_json::Value> = log
        .iter()
        .filter(|(a, _)| a == "org.mfa_requirement_changed")
        .map(|(_, d)| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(changes.len(), 2, "{log:?}");
    assert_eq!(changes[0]["required"], true);
    assert_eq!(
        changes[0]["without_two_factor"], 2,
        "the Admin and the second Owner"
    );
    assert_eq!(changes[1]["required"], false);
    // Those refusals are not recorded: a page left open would add events
    // (what a role refusal records is written from a task; give it time).
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let refused = actions(&p.db)
        .await
        .iter()
        .filter(|(a, d)| a == "access.refused" && d.contains("two-factor"))
        .count();
    assert_eq!(refused, 0);
}

control::both_backends!(
    a_code_signs_in_once,
    racing_with_one_code_lets_one_in,
    a_recovery_code_works_once,
    wrong_codes_are_throttled_under_concurrent_guessing,
    a_stale_sign_in_needs_the_password_again,
    seeds_and_codes_are_not_in_a_dump_and_survive_rotation,
    turning_it_off_needs_the_password,
    requiring_it_holds_owners_and_admins_until_they_set_it_up,
);
