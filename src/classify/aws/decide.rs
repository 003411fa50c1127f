//! Which service and region a request is for: the host and the scope the agent's SDK signed for
//! (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`), taken together.
//!
//! On an AWS hostname the host decides and the signed scope must agree: an agent that signs for
//! `iam` and sends the request to an S3 host, or signs for region A and sends it to a region-B
//! host, is refused, since AWS itself would reject the signature and the broker must not re-sign
//! (and so launder) a request for something other than what the agent asked for. On a custom
//! endpoint that leaves the service or region open (LocalStack, moto's server, a gateway serving
//! every service on one host), the signed scope decides what the host does not fix.
//!
//! Pure: no I/O, no configuration beyond the arguments.

use super::endpoint::{resolve_host, HostMatch};
use super::{CustomEndpoint, Endpoint, Partition};

/// The scope the agent's SigV4 signature names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignedFor<'a> {
    /// The signing name (`s3`, `dynamodb`, `monitoring`, …).
    pub service: &'a str,
    pub region: &'a str,
}

/// Why no endpoint could be decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecideError {
    /// The host is neither an AWS hostname the broker knows nor a configured custom endpoint.
    #[error("{0} is not a known AWS endpoint")]
    UnknownHost(String),
    /// The signature names a service the broker does not know.
    #[error("the request is signed for service {0:?}, which the broker cannot classify")]
    UnknownService(String),
    /// The signed scope contradicts the host (or the custom endpoint's configuration).
    #[error("{0}")]
    Mismatch(String),
}

/// SigV4 signing names → IAM service prefixes, for every service `resolve_endpoint` knows by host.
/// They differ only where AWS made them differ; a signing name missing here is not guessed at.
const SIGNING_NAMES: &[(&str, &str)] = &[
    ("s3", "s3"),
    ("dynamodb", "dynamodb"),
    ("sqs", "sqs"),
    ("sts", "sts"),
    ("iam", "iam"),
    ("kms", "kms"),
    ("secretsmanager", "secretsmanager"),
    ("logs", "logs"),
    ("kinesis", "kinesis"),
    ("sns", "sns"),
    ("ec2", "ec2"),
    ("ssm", "ssm"),
    ("lambda", "lambda"),
    ("monitoring", "cloudwatch"),
    ("events", "events"),
    ("states", "states"),
    ("ses", "ses"),
    ("rds", "rds"),
    ("ecs", "ecs"),
    ("eks", "eks"),
    ("cloudformation", "cloudformation"),
    ("cognito-identity", "cognito-identity"),
    ("ecr", "ecr"),
    ("awsssoportal", "sso"),
];

/// The IAM service prefix a signing name stands for.
pub fn iam_prefix(signing_name: &str) -> Option<&'static str> {
    SIGNING_NAMES.iter().find(|(name, _)| *name == signing_name).map(|(_, prefix)| *prefix)
}

/// Whether `prefix` is the IAM service prefix of a service the broker knows (config validation).
pub fn is_iam_prefix(prefix: &str) -> bool {
    SIGNING_NAMES.iter().any(|(_, p)| *p == prefix)
}

/// The endpoint `req` to `host` is for, given the scope its signature names.
///
/// The returned endpoint's service and region are the ones to classify with and to re-sign for.
pub fn decide_endpoint(host: &str, custom: &[CustomEndpoint], signed: SignedFor) -> Result<Endpoint, DecideError> {
    let Some(found) = resolve_host(host, custom) else {
        return Err(DecideError::UnknownHost(host.to_string()));
    };
    let service = iam_prefix(signed.service).ok_or_else(|| DecideError::UnknownService(signed.service.to_string()))?;
    match found {
        HostMatch::Aws(mut ep) => {
            if ep.service != service {
                return Err(DecideError::Mismatch(format!(
                    "the request is signed for service {:?} but sent to {host}, a {} endpoint; sign for the service the host serves",
                    signed.service, ep.service
                )));
            }
            if signed.region != ep.region {
                // A host that names no region (`s3.amazonaws.com`) serves S3 buckets of every
                // region of its partition, each signed for its own; everywhere else AWS checks
                // the signed region against the host's.
                let any_region =
                    ep.global && ep.service == "s3" && Partition::of_region(signed.region) == ep.partition && super::endpoint::is_region(signed.region);
                if !any_region {
                    return Err(DecideError::Mismatch(format!(
                        "the request is signed for region {:?} but sent to {host}, which serves {}; sign for the host's region",
                        signed.region, ep.region
                    )));
                }
                ep.region = signed.region.to_string();
            }
            Ok(ep)
        }
        HostMatch::Custom { service: fixed_service, region: fixed_region, bucket } => {
            if let Some(fixed) = fixed_service.as_deref().filter(|f| *f != service) {
                return Err(DecideError::Mismatch(format!(
                    "the request is signed for service {:?} but sent to {host}, configured as a {fixed} endpoint",
                    signed.service
                )));
            }
            if let Some(fixed) = fixed_region.as_deref().filter(|f| *f != signed.region) {
                return Err(DecideError::Mismatch(format!(
                    "the request is signed for region {:?} but sent to {host}, configured for region {fixed}",
                    signed.region
                )));
            }
            if bucket.is_some() && service != "s3" {
                return Err(DecideError::Mismatch(format!("{host} names an S3 bucket, but the request is signed for service {:?}", signed.service)));
            }
            // The region becomes part of ARNs and of the re-signed scope: one the configuration
            // does not fix must look like a region.
            if fixed_region.is_none() && !super::endpoint::is_region(signed.region) {
                return Err(DecideError::Mismatch(format!("the request is signed for {:?}, which is not an AWS region", signed.region)));
            }
            Ok(Endpoint {
                service: service.to_string(),
                region: signed.region.to_string(),
                partition: Partition::of_region(signed.region),
                bucket,
                access_point: None,
                fips: false,
                dualstack: false,
                global: false,
            })
        }
    }
}
