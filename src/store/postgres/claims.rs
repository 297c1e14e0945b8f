//! Idempotency keys of forward routes: claim, complete, release.

use super::{ms, token_bytes, PostgresStore, DELIVERED};
use crate::pipeline::DeliveryKey;
use crate::store::claim_wait;
use crate::store::queue::unix_ms;
use crate::store::{Claim, ClaimToken, Store, StoreError};
use async_trait::async_trait;
use std::time::{Duration, SystemTime};

#[async_trait]
impl Store for PostgresStore {
    async fn claim(&self, key: &DeliveryKey, lease: Duration) -> Result<Claim, StoreError> {
        let id = key.id.to_be_bytes().to_vec();
        let token = ClaimToken::random();
        let now = unix_ms(SystemTime::now());
        let expires = ms(now + lease.as_millis() as u64);
        let row = self
            .run(move |c| async move {
                c.query_one(
                    &c.prepare_cached(
                        "WITH ins AS (
                        INSERT INTO hookgate_claims (key, token, expires_ms) VALUES ($1, $2, $3)
                        ON CONFLICT (key) DO UPDATE
                            SET token = EXCLUDED.token, expires_ms = EXCLUDED.expires_ms
                            WHERE hookgate_claims.expires_ms <= $4
                        RETURNING 1)
                    SELECT (SELECT count(*) FROM ins),
                           (SELECT token FROM hookgate_claims WHERE key = $1),
                           (SELECT expires_ms FROM hookgate_claims WHERE key = $1)",
                    )
                    .await?,
                    &[&id, &token_bytes(token).as_slice(), &expires, &ms(now)],
                )
                .await
            })
            .await?;
        if row.get::<_, i64>(0) == 1 {
            return Ok(Claim::Claimed(token));
        }
        let held: Option<Vec<u8>> = row.get(1);
        let until: Option<i64> = row.get(2);
        Ok(match held {
            Some(t) if t == DELIVERED => Claim::Delivered,
            // A claim another replica committed while this statement ran: in flight.
            _ => Claim::InFlight {
                retry_after: claim_wait(until, ms(now)),
            },
        })
    }

    async fn complete(
        &self,
        key: &DeliveryKey,
        token: ClaimToken,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let id = key.id.to_be_bytes().to_vec();
        let now = unix_ms(SystemTime::now());
        let expires = ms(now + ttl.as_millis() as u64);
        self.run(move |c| async move {
            // Ours, or none left (our lease ran out), or already delivered: delivered now.
            // Someone else's live claim is left alone.
            c.execute(
                &c.prepare_cached(
                    "INSERT INTO hookgate_claims (key, token, expires_ms) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET token = $2, expires_ms = $3
                 WHERE hookgate_claims.token = $4 OR hookgate_claims.token = $2
                    OR hookgate_claims.expires_ms <= $5",
                )
                .await?,
                &[
                    &id,
                    &DELIVERED.as_slice(),
                    &expires,
                    &token_bytes(token).as_slice(),
                    &ms(now),
                ],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn release(&self, key: &DeliveryKey, token: ClaimToken) -> Result<(), StoreError> {
        let id = key.id.to_be_bytes().to_vec();
        self.run(move |c| async move {
            c.execute(
                &c.prepare_cached("DELETE FROM hookgate_claims WHERE key = $1 AND token = $2")
                    .await?,
                &[&id, &token_bytes(token).as_slice()],
            )
            .await
            .map(|_| ())
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run(|c| async move { c.simple_query("SELECT 1").await.map(|_| ()) })
            .await
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}
