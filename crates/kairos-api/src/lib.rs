//! Kairos REST API (axum): jobs, runs, output, problem+json errors, OpenAPI, metrics
