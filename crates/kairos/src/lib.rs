//! Kairos library facade.
