//! The one task that owns the unlocked client. Requests from the page arrive as jobs; between
//! jobs the task listens on the delivery WebSocket, so messages arrive live. Every job runs
//! alone against the client (the store and the ratchet states have one writer), and the page
//! hears "changed" whenever something it shows may have changed.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use parley_client::{ActivityMark, Client, ClientError, ClientOptions, Event};
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::time::Instant;

/// How long one listening round waits for a first envelope before reconnecting.
const LISTEN: Duration = Duration::from_secs(25);
/// Wait after a failed round before trying the server again; doubled after each failure.
const RETRY: Duration = Duration::from_secs(3);
/// Longest wait between tries while the server is unreachable.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Quiet time after a job before listening again.
const SETTLE: Duration = Duration::from_millis(300);
/// Jobs waiting for the engine; more are refused with "busy".
const QUEUE: usize = 64;

/// What the page is told over `/api/events`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Push {
    /// Something it shows may have changed: fetch again.
    Changed,
    /// The server became reachable or unreachable.
    Online(bool),
}

type BoxFut<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;
type Job = Box<dyn for<'a> FnOnce(&'a mut Option<Client>) -> BoxFut<'a> + Send>;

/// Where the client lives and how to reach it.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) home: PathBuf,
    pub(crate) server_override: Option<String>,
    pub(crate) opts: ClientOptions,
}

/// What the task tells the pages.
struct Signals {
    pushes: broadcast::Sender<Push>,
    online: AtomicBool,
}

impl Signals {
    fn set_online(&self, now: bool) {
        if self.online.swap(now, Ordering::Relaxed) != now {
            let _ = self.pushes.send(Push::Online(now));
            if now {
                // The outbox was flushed on reconnect: queued messages changed state.
                let _ = self.pushes.send(Push::Changed);
            }
        }
    }

    fn changed(&self) {
        let _ = self.pushes.send(Push::Changed);
    }
}

/// A handle on the engine task. The task itself holds no job sender: when every handle is
/// gone, it closes the client and ends.
#[derive(Clone)]
pub(crate) struct Engine {
    jobs: mpsc::Sender<Job>,
    /// Interrupts the listening round when a job is queued.
    wake: Arc<Notify>,
    signals: Arc<Signals>,
    pub(crate) settings: Arc<Settings>,
}

/// Why a job did not run or failed.
#[derive(Debug)]
pub(crate) enum JobError {
    /// No client: the store is locked.
    Locked,
    /// The engine is gone or overloaded.
    Unavailable,
    /// The client library's error.
    Client(ClientError),
}

impl From<ClientError> for JobError {
    fn from(e: ClientError) -> Self {
        Self::Client(e)
    }
}

impl Engine {
    /// Starts the engine, locked (or with `client` already unlocked).
    pub(crate) fn start(settings: Settings, client: Option<Client>) -> Engine {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (pushes, _) = broadcast::channel(64);
        let signals = Arc::new(Signals { pushes, online: AtomicBool::new(true) });
        let wake = Arc::new(Notify::new());
        tokio::spawn(run(client, rx, wake.clone(), signals.clone()));
        Engine { jobs, wake, signals, settings: Arc::new(settings) }
    }

    /// Subscribes to pushes for one page.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Push> {
        self.signals.pushes.subscribe()
    }

    /// Whether the last contact with the server worked.
    pub(crate) fn online(&self) -> bool {
        self.signals.online.load(Ordering::Relaxed)
    }

    pub(crate) fn set_online(&self, now: bool) {
        self.signals.set_online(now);
    }

    /// Tells every page to fetch again.
    pub(crate) fn changed(&self) {
        self.signals.changed();
    }

    /// Waits for the job in progress, then closes the store (the UI is stopping).
    pub(crate) async fn shutdown(&self) {
        let _ = self
            .with_slot(|slot| {
                Box::pin(async move {
                    if let Some(c) = slot.take() {
                        c.close().await;
                    }
                })
            })
            .await;
    }

    /// Runs `f` on the slot (locked or not) inside the engine task and returns its result.
    pub(crate) async fn with_slot<T, F>(&self, f: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(&'a mut Option<Client>) -> Pin<Box<dyn Future<Output = T> + Send + 'a>>
            + Send
            + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let job: Job = Box::new(move |slot| {
            Box::pin(async move {
                let _ = tx.send(f(slot).await);
            })
        });
        self.jobs.try_send(job).map_err(|_| JobError::Unavailable)?;
        self.wake.notify_one();
        rx.await.map_err(|_| JobError::Unavailable)
    }

    /// Runs `f` on the unlocked client; [`JobError::Locked`] when there is none.
    pub(crate) async fn with_client<T, F>(&self, f: F) -> Result<T, JobError>
    where
        T: Send + 'static,
        F: for<'a> FnOnce(
                &'a mut Client,
            )
                -> Pin<Box<dyn Future<Output = Result<T, ClientError>> + Send + 'a>>
            + Send
            + 'static,
    {
        let r = self
            .with_slot(move |slot| {
                Box::pin(async move {
                    match slot.as_mut() {
                        Some(c) => f(c).await.map_err(JobError::Client),
                        None => Err(JobError::Locked),
                    }
                })
            })
            .await?;
        if let Err(JobError::Client(e)) = &r
            && e.is_unreachable()
        {
            self.set_online(false);
        }
        r
    }
}

enum Next {
    Job(Option<Job>),
    Received(Result<Vec<Event>, ClientError>),
    /// The outbox sent (or gave up on) messages.
    Flushed,
    Resume,
}

async fn run(
    mut slot: Option<Client>,
    mut jobs: mpsc::Receiver<Job>,
    wake: Arc<Notify>,
    signals: Arc<Signals>,
) {
    // Until when not to listen (after a failure, or right after a job: a page's refresh is
    // several requests in a row, and each would otherwise cost a new listening round).
    let mut pause_until: Option<Instant> = None;
    let mut retry = RETRY;
    let mut mark = ActivityMark::default();
    loop {
        let next = match (slot.as_mut(), pause_until) {
            (None, _) => Next::Job(jobs.recv().await),
            (Some(_), Some(at)) => tokio::select! {
                biased;
                j = jobs.recv() => Next::Job(j),
                () = tokio::time::sleep_until(at) => Next::Resume,
            },
            // Jobs first; otherwise listen until a job arrives. A round is interrupted only
            // between frames (`receive_until`), never dropped half way through a message.
            (Some(client), None) => {
                // A wake-up left over from a job already run must not cut the next round short:
                // consume it. (Dropped before listening: a waiter still registered here would
                // take the wake-up meant for the round.)
                {
                    let stale = wake.notified();
                    tokio::pin!(stale);
                    stale.as_mut().enable();
                }
                match jobs.try_recv() {
                    Ok(job) => Next::Job(Some(job)),
                    Err(TryRecvError::Disconnected) => Next::Job(None),
                    // The outbox first, on its own: what it sends shows at once, not when the
                    // round that would otherwise send it ends.
                    Err(TryRecvError::Empty) => match client.flush_outbox().await {
                        Err(e) => Next::Received(Err(e)),
                        Ok(f) if !f.delivered.is_empty() || !f.failed.is_empty() => Next::Flushed,
                        Ok(_) => Next::Received(
                            client.receive_until(Some(LISTEN), wake.notified()).await,
                        ),
                    },
                }
            }
        };
        match &next {
            Next::Job(_) => tracing::debug!("job"),
            Next::Resume => tracing::debug!("resume listening"),
            Next::Flushed => tracing::debug!("outbox flushed"),
            Next::Received(r) => tracing::debug!("listening round: {:?}", r.as_ref().map(Vec::len)),
        }
        match next {
            Next::Job(None) => break,
            Next::Job(Some(job)) => {
                job(&mut slot).await;
                if signals.online.load(Ordering::Relaxed) {
                    // The job reached the server (or had no need to): listen again soon.
                    retry = RETRY;
                    pause_until = Some(Instant::now() + SETTLE);
                } else if pause_until.is_none() {
                    pause_until = Some(Instant::now() + SETTLE);
                }
            }
            Next::Resume => pause_until = None,
            Next::Received(Ok(_)) | Next::Flushed => {
                signals.set_online(true);
                retry = RETRY;
            }
            Next::Received(Err(e)) => {
                if e.is_unreachable() {
                    signals.set_online(false);
                } else {
                    tracing::warn!("receiving failed: {e}");
                }
                pause_until = Some(Instant::now() + retry);
                retry = (retry * 2).min(MAX_RETRY);
            }
        }
        // A round cut short may have stored messages without returning them: what the store
        // holds, not what a round returned, decides whether pages fetch again.
        if let Some(client) = slot.as_ref() {
            match client.activity_mark().await {
                Ok(now) if now != mark => {
                    mark = now;
                    signals.changed();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!("reading the local store failed: {e}"),
            }
        }
    }
    if let Some(client) = slot.take() {
        client.close().await;
    }
}
