//! A small pool of Postgres sessions for host calls: functions run concurrently,
//! each host call takes a session for one transaction and gives it back.

use std::sync::{Arc, Mutex};
use tokio_postgres::{Client, NoTls};

#[derive(Clone)]
pub struct Pool(Arc<Inner>);

struct Inner {
    url: String,
    idle: Mutex<Vec<Client>>,
    max_idle: usize,
    /// Sessions open at once, idle or lent: the host never takes more than this
    /// many of the database's connections.
    open: Arc<tokio::sync::Semaphore>,
}

impl Pool {
    /// A pool of at most `max` sessions.
    pub fn new(url: &str, max: usize) -> Self {
        Pool(Arc::new(Inner {
            url: url.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle: max,
            open: Arc::new(tokio::sync::Semaphore::new(max)),
        }))
    }

    /// An idle session, or a new one; waits while `max` are lent out.
    pub async fn get(&self) -> Result<Session, tokio_postgres::Error> {
        let slot = self
            .0
            .open
            .clone()
            .acquire_owned()
            .await
            .expect("never closed");
        loop {
            let idle = self.0.idle.lock().expect("pool lock").pop();
            match idle {
                Some(client) if client.is_closed() => continue,
                Some(client) => return Ok(self.session(client, slot)),
                None => break,
            }
        }
        let (client, connection) = tokio_postgres::connect(&self.0.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "function host: database session ended");
            }
        });
        Ok(self.session(client, slot))
    }

    fn session(&self, client: Client, slot: tokio::sync::OwnedSemaphorePermit) -> Session {
        Session {
            client: Some(client),
            pool: self.clone(),
            busy: false,
            _slot: slot,
        }
    }
}

/// A session on loan; it returns to the pool when dropped, unless it broke or
/// was left busy (a call abandoned mid-statement): that one is closed instead.
pub struct Session {
    client: Option<Client>,
    pool: Pool,
    busy: bool,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Session {
    pub fn mark_busy(&mut self) {
        self.busy = true;
    }

    pub fn mark_idle(&mut self) {
        self.busy = false;
    }
}

impl std::ops::Deref for Session {
    type Target = Client;
    fn deref(&self) -> &Client {
        self.client.as_ref().expect("present until dropped")
    }
}

impl std::ops::DerefMut for Session {
    fn deref_mut(&mut self) -> &mut Client {
        self.client.as_mut().expect("present until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            if client.is_closed() || self.busy {
                return;
            }
            let mut idle = self.pool.0.idle.lock().expect("pool lock");
            if idle.len() < self.pool.0.max_idle {
                idle.push(client);
            }
        }
    }
}
