//! The `env` provider, for dev and test only: hands out a static secret from an environment
//! variable. Config validation refuses it unless `mode: dev`.

use std::time::{Duration, SystemTime};

use futures::future::BoxFuture;
use futures::FutureExt;

use super::{new_lease_id, Credential, CredentialProvider, Lease, MintRequest, ProviderError, Secret};
use crate::classify::Scope;

pub struct EnvProvider {
    name: String,
    variable: String,
    ttl: Duration,
}

impl EnvProvider {
    pub fn new(name: &str, variable: &str, ttl: Duration) -> Self {
        EnvProvider { name: name.into(), variable: variable.into(), ttl }
    }
}

impl CredentialProvider for EnvProvider {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "env"
    }

    /// A static secret grants whatever it grants; the scope cannot narrow it.
    fn credential_scope(&self, _scope: &Scope, _method: &str) -> String {
        format!("env:{}", self.variable)
    }

    fn mint<'a>(&'a self, req: &'a MintRequest) -> BoxFuture<'a, Result<Lease, ProviderError>> {
        async move {
            let value = std::env::var(&self.variable).map_err(|_| ProviderError::permanent(format!("environment variable {} is not set", self.variable)))?;
            Ok(Lease {
                id: new_lease_id(),
                provider: self.name.clone(),
                credential: Credential::Token(Secret::new(value)),
                expires_at: SystemTime::now() + self.ttl.min(req.ttl),
                credential_scope: req.credential_scope.clone(),
                identity: req.identity.clone(),
                details: Default::default(),
            })
        }
        .boxed()
    }

    fn revoke<'a>(&'a self, _lease: &'a Lease) -> BoxFuture<'a, Result<(), ProviderError>> {
        // Nothing to revoke at the source: the broker dropping its copy is all that can be done.
        async { Ok(()) }.boxed()
    }

    fn rotate<'a>(&'a self, _secret_id: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async { Err(ProviderError::permanent("the env provider cannot rotate secrets")) }.boxed()
    }
}
