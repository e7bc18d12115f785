//! Kairos executors: command and shell (process groups), http, registered functions
