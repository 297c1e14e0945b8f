//! Schema migrations, embedded in the binary and applied at start by whichever replica takes the
//! advisory lock first; the others wait on the lock, then find nothing left to do. Migrations
//! only ever add: a destructive one needs a release note and a manual step.

use tokio_postgres::Client;

/// (version, SQL), applied in order, each in its own transaction.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("0001_init.sql")),
    (2, include_str!("0002_order_key.sql")),
    (3, include_str!("0003_breakers.sql")),
];

/// Arbitrary, fixed: the key of the advisory lock replicas take while migrating.
const LOCK_KEY: i64 = 0x686f_6f6b_6761_7465; // "hookgate"

/// Brings the schema up to date; returns the versions it applied.
pub async fn migrate(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&LOCK_KEY])
        .await?;
    let result = apply(client).await;
    // Released with the session anyway if this fails (the connection is then dropped).
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&LOCK_KEY])
        .await;
    result
}

async fn apply(client: &mut Client) -> Result<Vec<i32>, tokio_postgres::Error> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS hookgate_schema_migrations (
                version INT PRIMARY KEY,
                applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let mut applied = Vec::new();
    for (version, sql) in MIGRATIONS {
        let done = client
            .query_opt(
                "SELECT 1 FROM hookgate_schema_migrations WHERE version = $1",
                &[version],
            )
            .await?
            .is_some();
        if done {
            continue;
        }
        let txn = client.transaction().await?;
        txn.batch_execute(sql).await?;
        txn.execute(
            "INSERT INTO hookgate_schema_migrations (version) VALUES ($1)",
            &[version],
        )
        .await?;
        txn.commit().await?;
        applied.push(*version);
    }
    Ok(applied)
}
