//! Polly: a centralized storage scheduler.
