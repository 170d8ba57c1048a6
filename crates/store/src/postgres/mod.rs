//! The PostgreSQL backend (SPEC 10): several stateless qss nodes on one database. Being built
//! for issue 5; so far the schema and its migrations, which every node applies at start.

mod schema;

pub use schema::{LATEST_VERSION, migrate};
