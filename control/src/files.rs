//! Files and directories that hold secrets: the data directory (0700), the
//! SQLite database (0600), key files (0600, created exclusively).
//!
//! Invariant: what these functions create is readable by the service's own
//! user only, and an existing data directory or database file that others
//! could read is tightened, not trusted as it is.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` (and its parents) with mode 0700, or tightens an existing
/// one to 0700.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let mode = fs::metadata(dir)?.permissions().mode() & 0o777;
    if mode != 0o700 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Creates a new file with mode 0600; fails if it exists.
pub fn create_private(path: &Path) -> io::Result<fs::File> {
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Writes a new file with mode 0600; fails if it exists (never overwrites a key).
pub fn write_new_private(path: &Path, contents: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    create_private(path)?.write_all(contents)
}

/// Reads a secret file, refusing one that group or others could read.
pub fn read_private(path: &Path) -> io::Result<Vec<u8>> {
    let mode = fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("readable by other users (mode {mode:o}); run `chmod 600` on it"),
        ));
    }
    fs::read(path)
}

/// Makes sure `path` exists with mode 0600: created empty if missing, its
/// group and other bits removed if present.
pub fn ensure_private(path: &Path) -> io::Result<()> {
    match create_private(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            let mode = fs::metadata(path)?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700))?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_dir_and_database_are_private() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&dir).unwrap();
        assert_eq!(
            fs::metadata(&dir).unwrap().permissions().mode() & 0o777,
            0o700
        );

        let db = dir.join("pilothouse.db");
        ensure_private(&db).unwrap();
        assert_eq!(
            fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&db, fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private(&db).unwrap();
        assert_eq!(
            fs::metadata(&db).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(create_private(&db).is_err(), "never overwrites");
    }
}
