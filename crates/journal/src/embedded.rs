//! The embedded journal: a bounded queue drained by one batching writer task
//! into the store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use async_trait::async_trait;
use switchboard_protocol::Message;
use switchboard_store::Store;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Journal, JournalError};

type Pending = (Message, oneshot::Sender<Result<(), JournalError>>);

/// Sizes of the embedded journal.
#[derive(Debug, Clone, Copy)]
pub struct JournalOptions {
    /// Messages waiting for the writer at most; past it `append` fails at once
    /// with [`JournalError::Full`] instead of memory growing.
    pub queue: usize,
    /// Messages written in one transaction at most.
    pub max_batch: usize,
}

impl Default for JournalOptions {
    fn default() -> Self {
        Self {
            queue: 16_384,
            max_batch: 1_000,
        }
    }
}

/// A [`Journal`] that commits batches to a [`Store`] and acks after commit.
///
/// Batching is natural, not timed: the writer takes whatever queued up while
/// the previous transaction was committing, so a lone message is written at
/// once and a burst shares one commit (one fsync).
pub struct EmbeddedJournal {
    tx: mpsc::Sender<Pending>,
    /// False after a batch failed, true again after one succeeds.
    healthy: Arc<AtomicBool>,
    stop: CancellationToken,
    writer: Mutex<Option<JoinHandle<()>>>,
}

impl EmbeddedJournal {
    /// Starts the writer task.
    pub fn start(store: Arc<dyn Store>, options: JournalOptions) -> Self {
        let (tx, rx) = mpsc::channel(options.queue.max(1));
        let stop = CancellationToken::new();
        let healthy = Arc::new(AtomicBool::new(true));
        let writer = tokio::spawn(write_loop(
            store,
            rx,
            stop.clone(),
            options.max_batch.max(1),
            healthy.clone(),
        ));
        Self {
            tx,
            healthy,
            stop,
            writer: Mutex::new(Some(writer)),
        }
    }
}

async fn write_loop(
    store: Arc<dyn Store>,
    mut rx: mpsc::Receiver<Pending>,
    stop: CancellationToken,
    max_batch: usize,
    healthy: Arc<AtomicBool>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(max_batch);
    loop {
        let first = tokio::select! {
            biased;
            first = rx.recv() => first,
            () = stop.cancelled() => {
                // Refuse new appends, then write what was already accepted.
                rx.close();
                rx.recv().await
            }
        };
        let Some(first) = first else { break };
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let ok = write_batch(store.as_ref(), &mut batch).await;
        healthy.store(ok, Ordering::Relaxed);
    }
}

/// Writes one batch and answers its appends; true when it committed.
async fn write_batch(store: &dyn Store, batch: &mut Vec<Pending>) -> bool {
    let messages: Vec<Message> = batch.iter().map(|(m, _)| m.clone()).collect();
    let started = Instant::now();
    let result = store
        .insert(&messages)
        .await
        .map_err(|e| JournalError::Write(e.to_string()));
    metrics::histogram!("switchboard_journal_batch_seconds")
        .record(started.elapsed().as_secs_f64());
    match &result {
        Ok(()) => {
            metrics::counter!("switchboard_journal_appended_total").increment(messages.len() as u64)
        }
        Err(e) => {
            metrics::counter!("switchboard_journal_failed_total").increment(messages.len() as u64);
            tracing::error!(error = %e, messages = messages.len(), "journal batch failed; senders get `unavailable`");
        }
    }
    let ok = result.is_ok();
    for (_, done) in batch.drain(..) {
        let _ = done.send(result.clone());
    }
    ok
}

#[async_trait]
impl Journal for EmbeddedJournal {
    async fn append(&self, message: Message) -> Result<(), JournalError> {
        let (done, wait) = oneshot::channel();
        self.tx.try_send((message, done)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => JournalError::Full,
            mpsc::error::TrySendError::Closed(_) => JournalError::Closed,
        })?;
        wait.await.map_err(|_| JournalError::Closed)?
    }

    async fn close(&self) {
        self.stop.cancel();
        let writer = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(writer) = writer {
            let _ = writer.await;
        }
    }

    fn is_ready(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    fn kind(&self) -> &'static str {
        "embedded"
    }

    fn queued(&self) -> usize {
        self.tx.max_capacity() - self.tx.capacity()
    }
}
