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
}

impl Pool {
    pub fn new(url: &str, max_idle: usize) -> Self {
        Pool(Arc::new(Inner {
            url: url.to_string(),
            idle: Mutex::new(Vec::new()),
            max_idle,
        }))
    }

    /// An idle session, or a new one.
    pub async fn get(&self) -> Result<Session, tokio_postgres::Error> {
        loop {
            let idle = self.0.idle.lock().expect("pool lock").pop();
            match idle {
                Some(client) if client.is_closed() => continue,
                Some(client) => return Ok(self.session(client)),
                None => break,
            }
        }
        let (client, connection) = tokio_postgres::connect(&self.0.url, NoTls).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "function host: database session ended");
            }
        });
        Ok(self.session(client))
    }

    fn session(&self, client: Client) -> Session {
        Session {
            client: Some(client),
            pool: self.clone(),
        }
    }
}

/// A session on loan; it returns to the pool when dropped (unless it broke).
pub struct Session {
    client: Option<Client>,
    pool: Pool,
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
            if client.is_closed() {
                return;
            }
            let mut idle = self.pool.0.idle.lock().expect("pool lock");
            if idle.len() < self.pool.0.max_idle {
                idle.push(client);
            }
        }
    }
}
