//! Settings whose names end in `_file` are read from the environment like
//! any other (`PILOTHOUSE_MASTER_KEY_FILE`, `PILOTHOUSE_TLS_CERT_FILE`, ...);
//! only `PILOTHOUSE_DATABASE_URL_FILE` names a file holding a secret's value.
//! On a real `pilothouse serve` process.

#![allow(clippy::unwrap_used)]

#[path = "helpers/process.rs"]
mod process;

#[test]
fn the_master_key_file_comes_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let key = dir.path().join("keys").join("master.key");
    std::fs::create_dir(dir.path().join("keys")).unwrap();
    let server = process::serve_with(
        &data,
        &[("PILOTHOUSE_MASTER_KEY_FILE", key.to_str().unwrap())],
    );
    assert!(
        key.is_file(),
        "the master key was not made where the variable says"
    );
    assert!(
        !data.join("master.key").exists(),
        "the variable was ignored: the default master key was made"
    );
    drop(server);
}

#[test]
fn the_database_url_file_holds_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("db-url");
    let db = dir.path().join("elsewhere.db");
    std::fs::write(&url_file, format!("sqlite://{}?mode=rwc\n", db.display())).unwrap();
    let server = process::serve_with(
        &dir.path().join("data"),
        &[("PILOTHOUSE_DATABASE_URL_FILE", url_file.to_str().unwrap())],
    );
    assert!(
        db.is_file(),
        "the database is not where the file's URL says"
    );
    drop(server);
}
