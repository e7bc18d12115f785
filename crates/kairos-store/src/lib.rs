//! Kairos store seam: the Store trait, its errors and the conformance suite every backend passes
