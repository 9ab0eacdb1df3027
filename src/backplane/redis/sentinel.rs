//! The master that Sentinel names, followed across failovers: the sentinels are asked
//! every heartbeat interval, and when they name another server the command connection
//! is replaced and the subscriber told to reconnect (it resubscribes and catches every
//! channel up from history, as after any reconnect).

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::link;
use super::unavailable;
use crate::backplane::BackplaneError;
use crate::metrics as m;

/// How long one sentinel may take to answer before the next is asked.
const SENTINEL_TIMEOUT: Duration = Duration::from_secs(1);

/// The current master of one Sentinel-managed set.
pub(super) struct SentinelMaster {
    sentinels: Vec<String>,
    name: String,
    /// The master's URL with `{addr}` where its `host:port` goes.
    master_url: String,
    command_timeout: Duration,
    current: Mutex<Option<Current>>,
    /// Bumped when the master changes.
    changed: watch::Sender<u64>,
}

#[derive(Clone)]
struct Current {
    addr: String,
    client: redis::Client,
    commands: ConnectionManager,
}

impl SentinelMaster {
    pub(super) fn new(
        sentinels: Vec<String>,
        name: String,
        master_url: String,
        command_timeout: Duration,
    ) -> Self {
        Self {
            sentinels,
            name,
            master_url,
            command_timeout,
            current: Mutex::new(None),
            changed: watch::channel(0).0,
        }
    }

    fn current(&self) -> Option<Current> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The master's command connection (asking the sentinels first if none is known).
    pub(super) async fn commands(&self) -> Result<ConnectionManager, BackplaneError> {
        match self.current() {
            Some(c) => Ok(c.commands),
            None => self.refresh().await.map(|c| c.commands),
        }
    }

    /// A client for the master, for the subscriber connection.
    pub(super) async fn client(&self) -> Result<redis::Client, BackplaneError> {
        match self.current() {
            Some(c) => Ok(c.client),
            None => self.refresh().await.map(|c| c.client),
        }
    }

    /// Tells when the master changed.
    pub(super) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Asks the sentinels, one after another, which server is the master.
    async fn locate(&self) -> Result<String, BackplaneError> {
        let mut last = String::from("no sentinel configured");
        for url in &self.sentinels {
            let asked = async {
                let mut c = link::client(url)?
                    .get_multiplexed_async_connection()
                    .await
                    .map_err(unavailable)?;
                redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&self.name)
                    .query_async::<Option<(String, u16)>>(&mut c)
                    .await
                    .map_err(unavailable)
            };
            match tokio::time::timeout(SENTINEL_TIMEOUT, asked).await {
                Ok(Ok(Some((host, port)))) if host.contains(':') => {
                    return Ok(format!("[{host}]:{port}"))
                }
                Ok(Ok(Some((host, port)))) => return Ok(format!("{host}:{port}")),
                Ok(Ok(None)) => last = format!("{url} knows no master named {}", self.name),
                Ok(Err(e)) => last = format!("{url}: {e}"),
                Err(_) => last = format!("{url} did not answer"),
            }
        }
        Err(unavailable(format!("no sentinel named the master: {last}")))
    }

    /// Asks the sentinels and switches to the master they name, if it is another one.
    async fn refresh(&self) -> Result<Current, BackplaneError> {
        let addr = self.locate().await?;
        if let Some(c) = self.current().filter(|c| c.addr == addr) {
            return Ok(c);
        }
        let client = link::client(&self.master_url.replace("{addr}", &addr))?;
        let commands = link::manager(client.clone(), self.command_timeout)?;
        let next = Current {
            addr: addr.clone(),
            client,
            commands,
        };
        let previous = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .replace(next.clone());
        match previous {
            Some(previous) if previous.addr != addr => {
                metrics::counter!(m::REDIS_MASTER_CHANGES).increment(1);
                tracing::warn!(master = %self.name, from = %previous.addr, to = %addr, "Sentinel names a new master; following it");
                self.changed.send_modify(|n| *n += 1);
            }
            Some(_) => {}
            None => tracing::info!(master = %self.name, addr = %addr, "Sentinel names the master"),
        }
        Ok(next)
    }

    /// Asks the sentinels every `interval` until `stop`.
    pub(super) async fn follow(&self, interval: Duration, stop: CancellationToken) {
        loop {
            if let Err(e) = self.refresh().await {
                tracing::warn!(error = %e, "cannot ask Sentinel for the master");
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
