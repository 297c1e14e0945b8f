-- hookgate schema 2: `order_by`. A destination of an ordered delivery carries its key; one is
-- taken only when no earlier delivery of its key is pending at that destination.
ALTER TABLE hookgate_destinations ADD COLUMN order_key TEXT;
CREATE INDEX hookgate_destinations_ordered
    ON hookgate_destinations (route, name, order_key, delivery_id)
    WHERE state = 'pending' AND order_key IS NOT NULL;
