-- hookgate schema 1: idempotency keys, and the delivery queue of queue routes.

CREATE TABLE hookgate_claims (
    key         BYTEA PRIMARY KEY,          -- the delivery key's 16 bytes (scope hashed in)
    token       BYTEA NOT NULL,             -- the claim's owner; 16 zero bytes once delivered
    expires_ms  BIGINT NOT NULL             -- Unix ms after which the record is gone
);
CREATE INDEX hookgate_claims_expiry ON hookgate_claims (expires_ms);

CREATE SEQUENCE hookgate_delivery_seq;

CREATE TABLE hookgate_deliveries (
    id                 BIGINT PRIMARY KEY,  -- acceptance ms << 20 | sequence: newest sorts last
    route              TEXT NOT NULL,
    received_ms        BIGINT NOT NULL,
    key                TEXT,
    event              TEXT,
    target             TEXT NOT NULL,
    headers            BYTEA NOT NULL,
    body               BYTEA NOT NULL
);
-- A delivery's row is written once: what changes as it is delivered lives in the narrow tables
-- below, so that an attempt's record never rewrites the body and the delivery's indexes.
CREATE INDEX hookgate_deliveries_route ON hookgate_deliveries (route, id);

-- Deliveries no destination waits for any more (delivered or dead), for the retention purge.
CREATE TABLE hookgate_finished (
    delivery_id  BIGINT PRIMARY KEY REFERENCES hookgate_deliveries (id) ON DELETE CASCADE,
    finished_ms  BIGINT NOT NULL
);
CREATE INDEX hookgate_finished_at ON hookgate_finished (finished_ms);

CREATE TABLE hookgate_destinations (
    delivery_id  BIGINT NOT NULL REFERENCES hookgate_deliveries (id) ON DELETE CASCADE,
    position     INT NOT NULL,
    route        TEXT NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts     INT NOT NULL DEFAULT 0,   -- started
    scheduled    INT NOT NULL DEFAULT 0,   -- started since the last retry by hand
    due_ms       BIGINT,
    last_status  INT,
    last_error   TEXT,
    PRIMARY KEY (delivery_id, name)
);
-- The worker's query: one destination's due attempts in order, however many are delivered.
CREATE INDEX hookgate_destinations_due ON hookgate_destinations (route, name, due_ms)
    WHERE state = 'pending';
-- Gauges, max_queued's count of unfinished deliveries, bulk retry: pending and dead ones only.
CREATE INDEX hookgate_destinations_undelivered
    ON hookgate_destinations (route, name, state, delivery_id) WHERE state <> 'delivered';
-- The delivery log's dead filter. A destination turns dead rarely, so this costs no write on the
-- way of an ordinary delivery.
CREATE INDEX hookgate_destinations_dead ON hookgate_destinations (delivery_id) WHERE state = 'dead';

CREATE TABLE hookgate_attempts (
    delivery_id  BIGINT NOT NULL REFERENCES hookgate_deliveries (id) ON DELETE CASCADE,
    n            INT NOT NULL,             -- the destination's attempt (its Hookgate-Attempt)
    destination  TEXT NOT NULL,
    started_ms   BIGINT NOT NULL,
    duration_ms  BIGINT NOT NULL,
    status       INT,
    error        TEXT,
    PRIMARY KEY (delivery_id, destination, n)
);
