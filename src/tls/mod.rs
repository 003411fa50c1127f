//! TLS: the per-pod certificate authority that intercepts routed hosts.

pub mod ca;

pub use ca::CertificateAuthority;
