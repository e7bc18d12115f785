//! Integration tests of kairos-exec with real child processes, a real HTTP server on
//! 127.0.0.1 and real registered functions. One test binary keeps build times down.

#![allow(
    clippy::unwrap_used,
    reason = "test helpers, like tests, fail by panicking"
)]

mod env;
mod exchange;
mod function;
mod hooks;
mod http;
mod limits;
mod node;
mod output;
mod process;
mod support;
