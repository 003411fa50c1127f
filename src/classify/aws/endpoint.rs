//! Endpoint resolution: an AWS hostname → the IAM service prefix, region and partition it serves.
//!
//! The host is the only thing the agent cannot lie about without the request going somewhere else,
//! so on an AWS hostname the service and region come from it (never from the body); the scope the
//! SDK signed for must agree with it (see `decide`). A custom endpoint may leave the service or the
//! region open (one emulator host serving every service): then the signed scope names them. Hosts
//! this module does not know resolve to `None`, and such requests are refused before classification.

/// An AWS partition: it fixes the ARN prefix and the DNS suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Partition {
    /// `arn:aws:`, `*.amazonaws.com`.
    Aws,
    /// `arn:aws-cn:`, `*.amazonaws.com.cn`.
    AwsCn,
    /// `arn:aws-us-gov:`, `*.amazonaws.com` with a `us-gov-*` region.
    AwsUsGov,
}

impl Partition {
    /// The partition segment of an ARN: `aws`, `aws-cn` or `aws-us-gov`.
    pub fn arn_name(self) -> &'static str {
        match self {
            Partition::Aws => "aws",
            Partition::AwsCn => "aws-cn",
            Partition::AwsUsGov => "aws-us-gov",
        }
    }

    /// The partition a region belongs to.
    pub fn of_region(region: &str) -> Partition {
        if region.starts_with("cn-") {
            Partition::AwsCn
        } else if region.starts_with("us-gov-") {
            Partition::AwsUsGov
        } else {
            Partition::Aws
        }
    }

    /// The region that global endpoints (IAM, global STS, `s3.amazonaws.com`) sign for.
    fn global_region(self) -> &'static str {
        match self {
            Partition::Aws => "us-east-1",
            Partition::AwsCn => "cn-north-1",
            Partition::AwsUsGov => "us-gov-west-1",
        }
    }
}

/// An S3 access point named by a virtual host (`NAME-ACCOUNT.s3-accesspoint.REGION.amazonaws.com`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPoint {
    pub name: String,
    pub account_id: String,
}

/// What a hostname tells about the API it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// The IAM service prefix: `s3`, `dynamodb`, `sqs`, `sts`, `iam`, `kms`, … (not the DNS label:
    /// `monitoring.*` is `cloudwatch`, `email.*` is `ses`).
    pub service: String,
    /// The region requests to this host are signed for; global endpoints map to their home region.
    pub region: String,
    pub partition: Partition,
    /// The bucket, when the host is an S3 virtual-hosted-style name. `None` means path-style.
    pub bucket: Option<String>,
    /// The access point, when the host is an S3 access point.
    pub access_point: Option<AccessPoint>,
    pub fips: bool,
    pub dualstack: bool,
    /// The hostname names no region (`s3.amazonaws.com`, `iam.amazonaws.com`): `region` is the
    /// partition's home region, not something the host insists on.
    pub global: bool,
}

/// A host the configuration maps to a service and region: an emulator (`127.0.0.1:5000` for moto),
/// a VPC endpoint's private DNS name, a corporate gateway.
///
/// For S3, requests to the host itself are path-style (`/bucket/key`); `BUCKET.<host>` is
/// virtual-hosted style.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomEndpoint {
    /// The exact host (any port matches) or `host:port` (only that port matches). Case-insensitive.
    pub host: String,
    /// The IAM service prefix requests to this host belong to; `None`: the host serves every
    /// service, and the one the request is signed for is used.
    pub service: Option<String>,
    /// The region of the host; `None`: the region the request is signed for.
    pub region: Option<String>,
}

/// What the host alone says, before the request's signature is consulted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum HostMatch {
    /// An AWS hostname: service and region are fixed by it.
    Aws(Endpoint),
    /// A configured custom endpoint; what it leaves open comes from the signed scope.
    Custom { service: Option<String>, region: Option<String>, bucket: Option<String> },
}

/// Endpoint prefixes (the leading DNS labels) whose IAM service prefix differs from, or needs to be
/// known beside, the label. Hosts for services missing here resolve to `None`: guessing the IAM
/// prefix from an unknown label could name the wrong service.
const SERVICES: &[(&str, &str)] = &[
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
    ("email", "ses"),
    ("rds", "rds"),
    ("ecs", "ecs"),
    ("eks", "eks"),
    ("cloudformation", "cloudformation"),
    ("cognito-identity", "cognito-identity"),
    ("api.ecr", "ecr"),
    ("portal.sso", "sso"),
];

/// Services with a global endpoint (`iam.amazonaws.com`), signed for the partition's home region.
const GLOBAL_SERVICES: &[&str] = &["iam", "sts", "s3", "ec2"];

/// Resolve `host` (a hostname, optionally with `:port`) to the endpoint it serves.
///
/// Custom endpoints are tried first, so configuration can override anything. Returns `None` for
/// hosts that are not AWS API endpoints this module knows.
///
/// A custom endpoint that leaves its service or region open resolves to `None` here: only the
/// request's signature can complete it (see [`super::decide::decide_endpoint`]).
pub fn resolve_endpoint(host: &str, custom: &[CustomEndpoint]) -> Option<Endpoint> {
    match resolve_host(host, custom)? {
        HostMatch::Aws(ep) => Some(ep),
        HostMatch::Custom { service: Some(service), region: Some(region), bucket } => {
            if bucket.is_some() && service != "s3" {
                return None;
            }
            let mut ep = endpoint(&service, &region);
            ep.bucket = bucket;
            Some(ep)
        }
        HostMatch::Custom { .. } => None,
    }
}

/// What `host` says by itself: a custom endpoint (tried first, so configuration can override
/// anything), an AWS hostname, or `None`.
pub(crate) fn resolve_host(host: &str, custom: &[CustomEndpoint]) -> Option<HostMatch> {
    let authority = host.trim().to_ascii_lowercase();
    let (hostname, _port) = split_port(&authority);
    let hostname = hostname.strip_suffix('.').unwrap_or(hostname);
    if let Some(m) = resolve_custom(&authority, hostname, custom) {
        return Some(m);
    }
    resolve_aws(hostname).map(HostMatch::Aws)
}

/// Split `host:port` (or `[v6]:port`) into host and port.
fn split_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((h, tail)) => (h, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => (h, Some(p)),
        _ => (authority, None),
    }
}

fn resolve_custom(authority: &str, hostname: &str, custom: &[CustomEndpoint]) -> Option<HostMatch> {
    for c in custom {
        let want = c.host.trim().to_ascii_lowercase();
        let (want_host, want_port) = split_port(&want);
        // A configured port must match exactly; a configured bare host matches any port.
        let candidate = if want_port.is_some() { authority } else { hostname };
        let target = if want_port.is_some() { want.as_str() } else { want_host };
        let found = |bucket: Option<&str>| HostMatch::Custom { service: c.service.clone(), region: c.region.clone(), bucket: bucket.map(str::to_string) };
        if candidate == target {
            return Some(found(None));
        }
        // `BUCKET.<custom host>` is virtual-hosted style for a custom S3 endpoint, or for an
        // any-service one (where only a request signed for S3 may then use it).
        if c.service.as_deref().is_none_or(|s| s == "s3") {
            if let Some(bucket) = candidate.strip_suffix(target).and_then(|b| b.strip_suffix('.')).filter(|b| is_bucket_name(b)) {
                return Some(found(Some(bucket)));
            }
        }
    }
    None
}

fn resolve_aws(hostname: &str) -> Option<Endpoint> {
    let (rest, suffix_partition, api_aws) = if let Some(r) = hostname.strip_suffix(".amazonaws.com.cn") {
        (r, Partition::AwsCn, false)
    } else if let Some(r) = hostname.strip_suffix(".amazonaws.com") {
        (r, Partition::Aws, false)
    } else if let Some(r) = hostname.strip_suffix(".api.aws") {
        // The newer dual-stack domain (`dynamodb.us-east-1.api.aws`).
        (r, Partition::Aws, true)
    } else {
        return None;
    };
    let mut labels: Vec<&str> = rest.split('.').collect();
    if labels.iter().any(|l| l.is_empty()) {
        return None;
    }
    // Interface VPC endpoints: `[bucket.]vpce-ID.SERVICE.REGION.vpce.amazonaws.com`.
    if labels.last() == Some(&"vpce") {
        labels.pop();
        let i = labels.iter().position(|l| l.starts_with("vpce-"))?;
        labels.remove(i);
    }
    let mut ep = if labels.iter().any(|l| l.starts_with("s3")) { resolve_s3(&labels)? } else { resolve_service(&labels)? };
    ep.dualstack |= api_aws;
    // The DNS suffix and the region must agree on the partition (`cn-north-1.amazonaws.com` is not
    // a real endpoint, and would sign ARNs for the wrong partition).
    let from_region = Partition::of_region(&ep.region);
    let consistent = match suffix_partition {
        Partition::AwsCn => from_region == Partition::AwsCn,
        _ => from_region != Partition::AwsCn && !(api_aws && from_region == Partition::AwsUsGov),
    };
    if !consistent {
        return None;
    }
    ep.partition = from_region;
    Some(ep)
}

fn endpoint(service: &str, region: &str) -> Endpoint {
    Endpoint {
        service: service.to_string(),
        region: region.to_string(),
        partition: Partition::of_region(region),
        bucket: None,
        access_point: None,
        fips: false,
        dualstack: false,
        global: false,
    }
}

/// Non-S3 hosts: `SERVICE[-fips][.dualstack].REGION`, global `SERVICE[-fips]`, SQS's legacy
/// `[REGION.]queue`, IAM GovCloud `iam.us-gov`, DynamoDB account endpoints `ACCOUNT.ddb.REGION`.
fn resolve_service(labels: &[&str]) -> Option<Endpoint> {
    match labels {
        ["queue"] => return Some(endpoint("sqs", "us-east-1")),
        [region, "queue"] if is_region(region) => return Some(endpoint("sqs", region)),
        ["iam", "us-gov"] => return Some(endpoint("iam", "us-gov-west-1")),
        [account, "ddb", region] if is_account_id(account) && is_region(region) => return Some(endpoint("dynamodb", region)),
        _ => {}
    }
    let (region_label, prefix): (Option<&str>, &[&str]) = match labels.split_last() {
        Some((last, init)) if is_region(last) => (Some(*last), init),
        _ => (None, labels),
    };
    let (prefix, dualstack) = match prefix.split_last() {
        Some((&"dualstack", init)) => (init, true),
        _ => (prefix, false),
    };
    let joined = prefix.join(".");
    let (name, fips) = match joined.strip_suffix("-fips") {
        Some(n) => (n, true),
        None => (joined.as_str(), false),
    };
    let service = SERVICES.iter().find(|(label, _)| *label == name)?.1;
    let region = match region_label {
        Some(r) if service == "iam" => Partition::of_region(r).global_region().to_string(),
        Some(r) => r.to_string(),
        None if GLOBAL_SERVICES.contains(&service) && !dualstack => "us-east-1".to_string(),
        None => return None,
    };
    let mut ep = endpoint(service, &region);
    ep.global = region_label.is_none();
    ep.fips = fips;
    ep.dualstack = dualstack;
    Some(ep)
}

/// S3 hosts, read from the right so that dotted bucket names (`my.dotted.bucket.s3.amazonaws.com`)
/// keep their dots: the rightmost label that is an S3 service label splits bucket from qualifiers.
fn resolve_s3(labels: &[&str]) -> Option<Endpoint> {
    for i in (0..labels.len()).rev() {
        let Some(kind) = s3_label(labels[i]) else {
            continue;
        };
        let Some((region, dualstack)) = s3_qualifiers(&kind, &labels[i + 1..]) else {
            continue;
        };
        let owner = &labels[..i];
        let mut ep = endpoint("s3", &region);
        ep.global = kind.region.is_none() && i + 1 == labels.len();
        ep.fips = kind.fips;
        ep.dualstack = dualstack;
        if kind.access_point {
            // `NAME-ACCOUNT`: the account id is the last dash-separated part.
            let [label] = owner else { return None };
            let (name, account) = label.rsplit_once('-')?;
            if !is_account_id(account) || name.is_empty() {
                return None;
            }
            ep.access_point = Some(AccessPoint { name: name.to_string(), account_id: account.to_string() });
        } else if !owner.is_empty() {
            let bucket = owner.join(".");
            if !is_bucket_name(&bucket) {
                return None;
            }
            ep.bucket = Some(bucket);
        }
        return Some(ep);
    }
    None
}

struct S3Label {
    fips: bool,
    access_point: bool,
    /// The region embedded in a legacy dash-style label (`s3-us-west-2`).
    region: Option<String>,
}

/// Recognise `s3`, `s3-fips`, `s3-accesspoint`, `s3-accesspoint-fips`, `s3-external-1`,
/// `s3-REGION`. Control-plane (`s3-control`), website and Express hosts are deliberately not S3
/// REST endpoints here.
fn s3_label(label: &str) -> Option<S3Label> {
    let plain = |fips, access_point| S3Label { fips, access_point, region: None };
    match label {
        "s3" => Some(plain(false, false)),
        "s3-fips" => Some(plain(true, false)),
        "s3-accesspoint" => Some(plain(false, true)),
        "s3-accesspoint-fips" => Some(plain(true, true)),
        "s3-external-1" => Some(S3Label { region: Some("us-east-1".into()), ..plain(false, false) }),
        _ => {
            let region = label.strip_prefix("s3-").filter(|r| is_region(r))?;
            Some(S3Label { region: Some(region.to_string()), ..plain(false, false) })
        }
    }
}

/// The labels after the S3 service label: `[dualstack.]REGION`, or nothing for the global endpoint.
fn s3_qualifiers(kind: &S3Label, rest: &[&str]) -> Option<(String, bool)> {
    if let Some(region) = &kind.region {
        return rest.is_empty().then(|| (region.clone(), false));
    }
    match rest {
        [] if !kind.access_point && !kind.fips => Some(("us-east-1".into(), false)),
        [region] if is_region(region) => Some((region.to_string(), false)),
        ["dualstack", region] if is_region(region) => Some((region.to_string(), true)),
        _ => None,
    }
}

/// `us-east-1`, `us-gov-west-1`, `cn-north-1`, `ap-southeast-2`, `eu-central-1`, `il-central-1`.
pub(crate) fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    if parts.len() < 3 {
        return false;
    }
    let (last, init) = match parts.split_last() {
        Some(x) => x,
        None => return false,
    };
    !last.is_empty()
        && last.len() <= 2
        && last.bytes().all(|b| b.is_ascii_digit())
        && init[0].len() == 2
        && init.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
}

/// Twelve ASCII digits.
pub(crate) fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// S3 bucket names, including legacy us-east-1 names (upper case, underscores). Characters that
/// mean something in an ARN or an IAM policy (`*`, `?`, `/`, `:`, `$`) are never part of one.
pub(crate) fn is_bucket_name(s: &str) -> bool {
    (3..=255).contains(&s.len())
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
        && !s.starts_with('.')
        && !s.ends_with('.')
        && !s.contains("..")
}
