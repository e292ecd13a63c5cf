//! In-memory backend of every core port (tests, embedding).
