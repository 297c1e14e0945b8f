//! Group commit: what arrives while a commit is in progress waits and is written by the next one,
//! all statements of a group pipelined on one connection in one transaction. One commit then
//! covers many writes, and nobody is answered before the commit that holds their write.
//!
//! A group fails as a whole (a statement or the commit fails, the database is gone): every write
//! in it is answered unavailable and nothing of it is kept. A deadlock or serialization failure
//! aborts the transaction, which is then written again.

use super::{statement_failed, unavailable, OP_TIMEOUT};
use crate::store::StoreError;
use async_trait::async_trait;
use deadpool_postgres::{Pool, Transaction};
use std::cmp::Ordering;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio_postgres::error::SqlState;

/// One kind of write that groups commit: its statements, and the order a group is written in.
#[async_trait]
pub trait GroupWrite: Send + Sync + 'static {
    type Item: Send + Sync + 'static;
    type Outcome: Send + 'static;

    /// The order of a group's writes. Every writer takes its row locks in this order, so two
    /// groups holding the same rows cannot wait on each other in a cycle.
    fn order(a: &Self::Item, b: &Self::Item) -> Ordering;

    /// Issues `items`' statements in `txn`, in order, and says what each did.
    async fn write(
        txn: &Transaction<'_>,
        items: &[Self::Item],
    ) -> Result<Vec<Self::Outcome>, tokio_postgres::Error>;
}

/// Writes one group holds at most.
const MAX_GROUP: usize = 128;
/// Commits of one kind in progress at once (each on its own pooled connection).
const WRITERS: usize = 2;
/// Writes waiting for a writer at most; beyond it the store answers unavailable.
const MAX_WAITING: usize = 4096;
/// Tries of one group that meets a deadlock or serialization failure.
const MAX_TRIES: u32 = 3;

type Waiting<W> = (
    <W as GroupWrite>::Item,
    oneshot::Sender<Result<<W as GroupWrite>::Outcome, StoreError>>,
);

/// The queue of waiting writes of one kind and the writers that commit them.
pub struct Groups<W: GroupWrite> {
    waiting: mpsc::Sender<Waiting<W>>,
}

impl<W: GroupWrite> Groups<W> {
    /// Starts the writers on the store's runtime, committing on `pool`'s connections.
    pub fn start(pool: Pool, runtime: &tokio::runtime::Handle) -> Self {
        let (tx, rx) = mpsc::channel(MAX_WAITING);
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..WRITERS {
            runtime.spawn(writer::<W>(pool.clone(), rx.clone()));
        }
        Self { waiting: tx }
    }

    /// Waits for the commit that holds `item` and answers what it did.
    pub async fn submit(&self, item: W::Item) -> Result<W::Outcome, StoreError> {
        let (answer, answered) = oneshot::channel();
        self.waiting
            .try_send((item, answer))
            .map_err(|_| unavailable("too many writes wait for Postgres"))?;
        // The writer bounds its own work by OP_TIMEOUT; the margin covers the wait for a writer.
        tokio::time::timeout(OP_TIMEOUT * 2, answered)
            .await
            .map_err(|_| unavailable("Postgres did not answer in time"))?
            .map_err(|_| unavailable("the Postgres writer stopped"))?
    }
}

async fn writer<W: GroupWrite>(pool: Pool, waiting: Arc<Mutex<mpsc::Receiver<Waiting<W>>>>) {
    loop {
        let mut group = Vec::with_capacity(MAX_GROUP);
        {
            let mut rx = waiting.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            group.push(first);
            while group.len() < MAX_GROUP {
                match rx.try_recv() {
                    Ok(next) => group.push(next),
                    Err(_) => break,
                }
            }
        }
        group.sort_by(|(a, _), (b, _)| W::order(a, b));
        let (items, answers): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let outcome = tokio::time::timeout(OP_TIMEOUT, commit::<W>(&pool, &items))
            .await
            .unwrap_or_else(|_| Err(unavailable("Postgres did not answer in time")));
        match outcome {
            Ok(results) => {
                for (answer, result) in answers.into_iter().zip(results) {
                    let _ = answer.send(Ok(result));
                }
            }
            Err(e) => {
                for answer in answers {
                    let _ = answer.send(Err(e.clone()));
                }
            }
        }
    }
}

/// Writes `items` (in the group's order) in one transaction; the outcomes once committed.
async fn commit<W: GroupWrite>(
    pool: &Pool,
    items: &[W::Item],
) -> Result<Vec<W::Outcome>, StoreError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let mut tries = 1;
    loop {
        let written = async {
            let txn = client.transaction().await?;
            let outcomes = W::write(&txn, items).await?;
            txn.commit().await?;
            Ok::<_, tokio_postgres::Error>(outcomes)
        }
        .await;
        match written {
            Err(e) if tries < MAX_TRIES && is_transient(&e) => tries += 1,
            outcome => return outcome.map_err(statement_failed),
        }
    }
}

fn is_transient(e: &tokio_postgres::Error) -> bool {
    e.code().is_some_and(|c| {
        *c == SqlState::T_R_DEADLOCK_DETECTED || *c == SqlState::T_R_SERIALIZATION_FAILURE
    })
}
