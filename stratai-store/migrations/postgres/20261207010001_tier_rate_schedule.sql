-- A tier's rate periods (JSON array of {effective_from, input_rate_per_million,
-- output_rate_per_million}, oldest first): past, current and scheduled rate changes. Empty: the
-- tier's input_token_rate and output_token_rate were never changed through a schedule and
-- are in force at every time. Usage records keep the amount billed when they were made, so
-- the schedule decides only what new requests are billed. A column of the platform table
-- model_tiers: the serving role's grants on the table cover it.
ALTER TABLE model_tiers ADD COLUMN rate_schedule JSONB NOT NULL DEFAULT '[]'::jsonb
    CHECK (jsonb_typeof(rate_schedule) = 'array');
