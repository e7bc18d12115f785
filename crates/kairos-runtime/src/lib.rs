//! Kairos node services: scheduler, worker, rescuer, change notification, events
