//! Retention: which backups to keep, and why (being written).
