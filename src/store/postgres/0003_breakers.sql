-- hookgate schema 3: a destination's breaker, shared by every replica (one replica's probe
-- decides for all). Times are Unix ms; open_until_ms NULL: closed.
CREATE TABLE hookgate_breakers (
    route TEXT NOT NULL,
    destination TEXT NOT NULL,
    failures INT NOT NULL DEFAULT 0,
    open_until_ms BIGINT,
    probe_until_ms BIGINT,
    PRIMARY KEY (route, destination)
);
