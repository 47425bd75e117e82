//! Which versions of the `spine` extension a process of this version works with.
//!
//! During a rolling upgrade the processes and the database move one at a time:
//! new processes first (they must work with the database's previous minor
//! version), then `ALTER EXTENSION spine UPDATE`. So a process of `A.B.x` accepts
//! a database at `A.B.*` or at the previous minor `A.(B-1).*`, and refuses any
//! other with a message that says which side to upgrade. Patch versions never
//! change what a process relies on.
//!
//! Each process calls [`check`] once at start.

use crate::{DbConfig, Error};
use std::fmt;

/// What a process of version `ours` can do with a database at `database`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compatibility {
    /// The same minor version.
    Same,
    /// The database is one minor version behind: everything works; the
    /// database should be upgraded (`ALTER EXTENSION spine UPDATE`).
    Previous,
    /// The database is newer than this process: upgrade the process.
    DatabaseNewer,
    /// The database is older than the previous minor version: upgrade it.
    DatabaseTooOld,
    /// A version string that is not `major.minor.patch`.
    Unreadable,
}

/// Decides, from the two version strings (`0.2.0`, `0.2.1-rc.1`, …).
pub fn compatibility(database: &str, ours: &str) -> Compatibility {
    let (Some(db), Some(us)) = (major_minor(database), major_minor(ours)) else {
        return Compatibility::Unreadable;
    };
    if db == us {
        Compatibility::Same
    } else if db > us {
        Compatibility::DatabaseNewer
    } else if db.0 == us.0 && db.1 + 1 == us.1 {
        Compatibility::Previous
    } else {
        Compatibility::DatabaseTooOld
    }
}

fn major_minor(version: &str) -> Option<(u64, u64)> {
    let core = version.split(['-', '+']).next()?;
    let mut parts = core.split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    parts.next()?.parse::<u64>().ok()?;
    parts.next().is_none().then_some((major, minor))
}

/// Why a process refuses a database.
#[derive(Debug)]
pub enum VersionError {
    /// Postgres could not be asked (down, wrong URL): the caller decides whether
    /// to go on and let its own retries wait for it.
    Unreachable(Error),
    /// `spine.version()` failed: no extension in that database.
    NotInstalled { database: String, message: String },
    /// The versions do not work together.
    Incompatible {
        process: &'static str,
        ours: String,
        database: String,
        verdict: Compatibility,
    },
}

impl fmt::Display for VersionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionError::Unreachable(e) => write!(f, "{e}"),
            VersionError::NotInstalled { database, message } => write!(
                f,
                "{database} has no spine extension ({message}): CREATE EXTENSION spine CASCADE, \
                 or point DATABASE_URL at a Spine database"
            ),
            VersionError::Incompatible {
                process,
                ours,
                database,
                verdict,
            } => match verdict {
                Compatibility::DatabaseNewer => write!(
                    f,
                    "the database has spine {database}, newer than this {process} ({ours}): \
                     upgrade {process} to {database}"
                ),
                _ => write!(
                    f,
                    "the database has spine {database}; this {process} ({ours}) works with \
                     its own minor version and the one before: upgrade the database \
                     (install the new release's files, then ALTER EXTENSION spine UPDATE; \
                     docs/operations.md, \"Upgrades\")"
                ),
            },
        }
    }
}

impl std::error::Error for VersionError {}

/// Asks the database for `spine.version()` and decides. `Ok` carries the
/// database's version and whether it is the previous minor (log a warning).
pub async fn check(
    db: &DbConfig,
    process: &'static str,
    ours: &str,
) -> Result<(String, Compatibility), VersionError> {
    let (client, connection) = db.connect().await.map_err(VersionError::Unreachable)?;
    let driver = tokio::spawn(connection);
    let row = client.query_one("SELECT spine.version()", &[]).await;
    driver.abort();
    let database: String = match row {
        Ok(row) => row.get(0),
        Err(e) => {
            return Err(VersionError::NotInstalled {
                database: db.redacted().to_string(),
                message: e
                    .as_db_error()
                    .map(|d| d.message().to_string())
                    .unwrap_or_else(|| e.to_string()),
            })
        }
    };
    match compatibility(&database, ours) {
        ok @ (Compatibility::Same | Compatibility::Previous) => Ok((database, ok)),
        verdict => Err(VersionError::Incompatible {
            process,
            ours: ours.to_string(),
            database,
            verdict,
        }),
    }
}

/// [`check`] as a process runs it at start: a database it cannot work with is an
/// error (exit with its message); the previous minor version is a warning; a
/// database it cannot reach now is a warning too, since every process already
/// waits for Postgres and retries (it checks again on its next start).
pub async fn check_at_start(
    db: &DbConfig,
    process: &'static str,
    ours: &str,
) -> Result<(), VersionError> {
    match check(db, process, ours).await {
        Ok((version, Compatibility::Previous)) => {
            tracing::warn!(
                database = %version,
                ours,
                "the database's spine extension is one minor version behind this {process}: \
                 everything works; run ALTER EXTENSION spine UPDATE to finish the upgrade"
            );
            Ok(())
        }
        Ok((version, _)) => {
            tracing::info!(database = %version, "spine extension version");
            Ok(())
        }
        Err(VersionError::Unreachable(e)) => {
            tracing::warn!(error = %e, "could not check the spine extension's version at start");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::Compatibility::*;
    use super::*;

    #[test]
    fn same_minor_and_the_previous_one_work() {
        assert_eq!(compatibility("0.2.0", "0.2.0"), Same);
        assert_eq!(compatibility("0.2.3", "0.2.0"), Same);
        assert_eq!(compatibility("0.2.0", "0.2.7-rc.1"), Same);
        assert_eq!(compatibility("0.1.0", "0.2.0"), Previous);
        assert_eq!(compatibility("1.9.2", "2.10.0"), DatabaseTooOld);
        assert_eq!(compatibility("1.9.2", "1.10.0"), Previous);
    }

    #[test]
    fn other_versions_are_refused_naming_the_side_to_upgrade() {
        assert_eq!(compatibility("0.3.0", "0.2.0"), DatabaseNewer);
        assert_eq!(compatibility("1.0.0", "0.9.0"), DatabaseNewer);
        assert_eq!(compatibility("0.0.9", "0.2.0"), DatabaseTooOld);
        assert_eq!(compatibility("0.2", "0.2.0"), Unreadable);
        assert_eq!(compatibility("x.y.z", "0.2.0"), Unreadable);
        let newer = VersionError::Incompatible {
            process: "spine-worker",
            ours: "0.2.0".into(),
            database: "0.3.0".into(),
            verdict: DatabaseNewer,
        };
        assert!(newer.to_string().contains("upgrade spine-worker to 0.3.0"));
        let older = VersionError::Incompatible {
            process: "spine-worker",
            ours: "0.3.0".into(),
            database: "0.1.0".into(),
            verdict: DatabaseTooOld,
        };
        assert!(older.to_string().contains("ALTER EXTENSION spine UPDATE"));
    }
}
