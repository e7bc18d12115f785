//! Kairos embedded store on SQLite (WAL, single file)
