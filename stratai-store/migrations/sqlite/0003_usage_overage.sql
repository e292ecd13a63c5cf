-- What a request billed beyond the worst case it reserved: charged to no hard budget (the
-- ledger settles at most the reservation) and alerted on. Zero for every earlier record.
ALTER TABLE usage_records ADD COLUMN overage TEXT NOT NULL DEFAULT '0';
