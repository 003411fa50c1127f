//! Test harness: real servers on 127.0.0.1:0 and the real broker binary, all stopped on drop.
#![allow(dead_code)]

pub mod alert_receiver;
pub mod broker;
pub mod clients;
pub mod jwt;
pub mod moto;
pub mod openbao;
pub mod pki;
pub mod postgres;
pub mod token_endpoint;
pub mod upstream;
