//! `pilothouse audit ...`: export the audit log, publish its signed
//! checkpoints and the audit public key, and verify an export offline.

use std::io::{BufReader, Write};
use std::path::Path;
use std::process::ExitCode;

use control::access::Operator;
use control::audit::AuditActor;
use control::audit_export::{self, ExportFilter, ExportFormat, ExportRange};
use control::checkpoints::{self, AuditKey, CheckpointCadence};
use control::key_vault;
use control::store::Store;
use control::{ControlError, OrgId, Timestamp};

/// Looks up the organisation for a command-line operator.
async fn org(store: &Store, name: &str) -> Result<OrgId, ControlError> {
    let operator = Operator::command_line(store.clone());
    let mut tx = store.begin().await?;
    let org = operator.org_named(&mut tx, name).await?;
    drop(tx);
    Ok(org)
}

/// Streams the organisation's events to stdout, after recording the export
/// itself in the log (so the export holds its own record).
pub async fn export(
    store: &Store,
    org_name: &str,
    format: ExportFormat,
    range: ExportRange,
) -> Result<u64, ControlError> {
    let org = org(store, org_name).await?;
    let filter = ExportFilter::from(range);
    audit_export::record_export(
        store,
        &AuditActor::cli(),
        org,
        format,
        &filter,
        Timestamp::now(),
    )
    .await?;
    // Unlocked stdout (the lock guard is not Send); the export writes a page
    // at a time.
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::io::stdout());
    audit_export::export(store, org, &filter, format, &mut out).await
}

/// Prints the organisation's checkpoints (JSON Lines), signing one for its
/// chain as it stands first when `sign_now` (every chain that grew since its
/// last checkpoint is signed, whatever the cadence).
pub async fn checkpoints(
    store: &Store,
    keys: KeyPlace<'_>,
    cadence: CheckpointCadence,
    org_name: &str,
    sign_now: bool,
) -> Result<usize, ControlError> {
    let org = org(store, org_name).await?;
    if sign_now {
        let key = audit_key(store, keys).await?;
        checkpoints::sign_due(store, &key, cadence, true, Timestamp::now()).await?;
    }
    let list = checkpoints::list(store, org).await?;
    let mut out = std::io::stdout().lock();
    for c in &list {
        let line = serde_json::to_string(c).map_err(ControlError::internal)?;
        writeln!(out, "{line}").map_err(ControlError::internal)?;
    }
    Ok(list.len())
}

/// Where the control plane's keys are: the data directory (for keys an
/// earlier version kept there) and where the master key they are sealed
/// under comes from.
#[derive(Clone, Copy)]
pub struct KeyPlace<'a> {
    pub data_dir: &'a Path,
    pub master_key: &'a control::secrets::MasterKeySource,
}

/// The audit key, from the database (made the first time).
async fn audit_key(store: &Store, keys: KeyPlace<'_>) -> Result<AuditKey, ControlError> {
    let ring = key_vault::open_ring(store, keys.master_key)
        .await
        .map_err(ControlError::internal)?;
    key_vault::audit_key(store, &ring, keys.data_dir)
        .await
        .map_err(ControlError::internal)
}

/// Prints the audit public key (creating the key the first time).
pub async fn key(store: &Store, keys: KeyPlace<'_>) -> Result<(), ControlError> {
    let key = audit_key(store, keys).await?;
    println!("{}", key.public_key());
    eprintln!(
        "key id {}: pin this public key where you keep the checkpoints",
        key.key_id()
    );
    Ok(())
}

/// Verifies an export offline. Exit 0 when it verifies, 1 when it does not
/// (the first problem named), 2 for unusable input.
pub fn verify(export: &Path, checkpoints: &Path, key: &str) -> ExitCode {
    let usage = |msg: String| {
        eprintln!("pilothouse: {msg}");
        ExitCode::from(2)
    };
    // The key itself, or a file that holds it.
    let key_text = if Path::new(key).is_file() {
        match std::fs::read_to_string(key) {
            Ok(t) => t,
            Err(e) => return usage(format!("cannot read the key file {key}: {e}")),
        }
    } else {
        key.to_string()
    };
    let Some(key) = checkpoints::parse_public_key(&key_text) else {
        return usage(
            "--key is not an audit public key (base64url, as `pilothouse audit key` prints it) or a file holding one".into(),
        );
    };
    let open = |p: &Path| {
        std::fs::File::open(p)
            .map(|f| BufReader::with_capacity(1 << 20, f))
            .map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (mut events, mut signed) = match (open(export), open(checkpoints)) {
        (Ok(e), Ok(c)) => (e, c),
        (Err(m), _) | (_, Err(m)) => return usage(m),
    };
    let started = std::time::Instant::now();
    match audit_export::verify_export(&mut events, &mut signed, &key) {
        Err(e) => usage(format!("reading failed: {e}")),
        Ok(Err(broken)) => {
            eprintln!("pilothouse: NOT VERIFIED: {broken}");
            ExitCode::FAILURE
        }
        Ok(Ok(v)) => {
            let range = match (v.first_seq, v.last_seq) {
                (Some(a), Some(b)) => format!("events {a} to {b}"),
                _ => "no events".to_string(),
            };
            println!(
                "verified: {} events ({range}), {} checkpoints matched{}; head hash {} ({:.2} s)",
                v.events,
                v.checkpoints_matched,
                if v.checkpoints_before > 0 {
                    format!(
                        ", {} before the export's first event not checked",
                        v.checkpoints_before
                    )
                } else {
                    String::new()
                },
                v.head_hash.as_deref().unwrap_or("none"),
                started.elapsed().as_secs_f64()
            );
            if v.first_seq.is_some_and(|s| s > 1) {
                println!("note: the export starts at event {}, not the chain's first: its first link is taken as given", v.first_seq.unwrap_or(0));
            }
            ExitCode::SUCCESS
        }
    }
}
