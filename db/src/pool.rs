//! A pool of sessions for short transactions (deadpool-postgres): a caller takes
//! a [`Session`] for one transaction and gives it back by dropping it.
//!
//! Bounded everywhere: at most `max_size` connections, a wait for a free one, a
//! connect and a check on reuse each with a timeout. A session dropped while
//! marked busy (a call abandoned mid-statement) is closed, never reused.

use crate::{DbConfig, Error};
use deadpool_postgres::{Manager, Object, PoolError, Runtime, TimeoutType};
use std::time::Duration;
use tokio_postgres::Client;

#[derive(Debug, Clone, Copy)]
pub struct PoolOptions {
    /// Most connections open at once, idle or lent.
    pub max_size: usize,
    /// How long [`Pool::get`] waits for a session when all are lent.
    pub wait_timeout: Duration,
    /// How long opening a new connection may take (TCP, TLS, authentication).
    pub create_timeout: Duration,
    /// How long checking an idle connection before reuse may take.
    pub recycle_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_size: 16,
            wait_timeout: Duration::from_secs(30),
            create_timeout: Duration::from_secs(10),
            recycle_timeout: Duration::from_secs(5),
        }
    }
}

/// What metrics report about a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStatus {
    pub max_size: usize,
    /// Connections open, idle or lent.
    pub size: usize,
    /// Idle connections ready to lend.
    pub available: usize,
    /// Callers waiting for a session.
    pub waiting: usize,
}

#[derive(Clone)]
pub struct Pool {
    inner: deadpool_postgres::Pool,
    db: DbConfig,
    options: PoolOptions,
}

impl Pool {
    /// A pool on `db`; no connection is opened until the first [`Pool::get`].
    pub fn new(db: &DbConfig, options: PoolOptions) -> Self {
        // Reuse checks only that the connection is open (the fast method): a
        // session goes back only after its transaction ended (see Session).
        let manager = Manager::new(db.pg_config().clone(), db.tls());
        let inner = deadpool_postgres::Pool::builder(manager)
            .max_size(options.max_size)
            .wait_timeout(Some(options.wait_timeout))
            .create_timeout(Some(options.create_timeout))
            .recycle_timeout(Some(options.recycle_timeout))
            .runtime(Runtime::Tokio1)
            .build()
            .expect("a runtime is set, so the timeouts are valid");
        Self {
            inner,
            db: db.clone(),
            options,
        }
    }

    /// An idle session, or a new connection; waits up to `wait_timeout` while
    /// `max_size` are lent.
    pub async fn get(&self) -> Result<Session, Error> {
        let target = || self.db.redacted().to_string();
        let object = self.inner.get().await.map_err(|e| match e {
            PoolError::Backend(cause) => self.db.connect_error(cause),
            PoolError::Timeout(TimeoutType::Create) => Error::ConnectTimeout {
                target: target(),
                after: self.options.create_timeout,
            },
            PoolError::Timeout(_) => Error::PoolTimeout {
                target: target(),
                after: self.options.wait_timeout,
                max: self.options.max_size,
            },
            PoolError::Closed => Error::PoolClosed { target: target() },
            other => Error::Tls(format!("{}: {other}", target())),
        })?;
        Ok(Session {
            object: Some(object),
            busy: false,
        })
    }

    pub fn status(&self) -> PoolStatus {
        let s = self.inner.status();
        PoolStatus {
            max_size: s.max_size,
            size: s.size,
            available: s.available,
            waiting: s.waiting,
        }
    }

    pub fn db(&self) -> &DbConfig {
        &self.db
    }
}

/// A session on loan; it returns to the pool when dropped, unless it was left
/// busy (a call abandoned mid-statement): that one is closed instead. A closed
/// connection is found and replaced when next taken.
pub struct Session {
    object: Option<Object>,
    busy: bool,
}

impl Session {
    /// From here until [`Session::mark_idle`], dropping the session closes it.
    pub fn mark_busy(&mut self) {
        self.busy = true;
    }

    pub fn mark_idle(&mut self) {
        self.busy = false;
    }

    /// A statement prepared once per connection and kept with it: a surface
    /// that sends the same SQL again and again (the gateway) saves the round
    /// trip that preparing costs.
    pub async fn prepare_cached(
        &self,
        sql: &str,
    ) -> Result<tokio_postgres::Statement, tokio_postgres::Error> {
        self.object
            .as_ref()
            .expect("present until dropped")
            .prepare_cached(sql)
            .await
    }
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.object.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        self.object.as_mut().expect("present until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(object) = self.object.take() {
            if self.busy {
                // Out of the pool; dropping the client ends its connection.
                drop(Object::take(object));
            }
        }
    }
}
