//! PostgreSQL backend with row-level security (production).
