//! Dynamic PostgreSQL roles for stint.
