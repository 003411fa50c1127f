//! The audit log: one JSON line per decision and per issuance, each holding the hash of the one
//! before it, written and fsync'd before the credential it records is used. Never a secret.

pub mod record;
pub mod refusals;
pub mod verify;
pub mod writer;

pub use record::{AuditEvent, AuditRecord};
pub use refusals::{Refusal, RefusalAudit};
pub use writer::{AuditError, AuditLog};
