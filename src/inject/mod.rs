//! Injection: putting a minted credential onto the request, the last mutation before upstream.

pub mod header;
pub mod sigv4;
