//! S3 REST: method + path + query "sub-resource" markers (+ a few headers) → IAM actions and ARNs.
//!
//! The operation is read the way S3 itself dispatches it: which bucket and key the path (or the
//! virtual host) names, which marker parameter (`?acl`, `?tagging`, `?uploads`, …) is present,
//! and the method. Query parameters that are neither a known marker nor a known harmless option
//! make the request unclassified: S3 may act on a marker the broker does not know.

use http::Method;

use super::arn::escape_policy_chars;
use super::endpoint::is_bucket_name;
use super::params::{percent_decode, Params};
use super::{header, permission, s3_copy_source, s3_multi_delete, unclassified, AwsRequest};
use super::{ClassifyError, Endpoint, Permission};

/// Parameters that select a different operation ("sub-resources"). At most one per request.
const MARKERS: &[&str] = &[
    "accelerate",
    "acl",
    "analytics",
    "attributes",
    "cors",
    "delete",
    "encryption",
    "intelligent-tiering",
    "inventory",
    "legal-hold",
    "lifecycle",
    "location",
    "logging",
    "metrics",
    "notification",
    "object-lock",
    "ownershipControls",
    "policy",
    "policyStatus",
    "publicAccessBlock",
    "replication",
    "requestPayment",
    "restore",
    "retention",
    "select",
    "tagging",
    "torrent",
    "uploads",
    "versioning",
    "versions",
    "website",
];

/// Parameters that only shape the response or the listing, never the operation or its resource.
/// `X-Amz-*` (presigned URL signing parameters) and `response-*` (response header overrides) are
/// accepted by prefix.
const OPTIONS: &[&str] = &[
    "x-id",
    "list-type",
    "prefix",
    "delimiter",
    "max-keys",
    "marker",
    "continuation-token",
    "start-after",
    "fetch-owner",
    "encoding-type",
    "key-marker",
    "version-id-marker",
    "upload-id-marker",
    "max-uploads",
    "max-parts",
    "part-number-marker",
    "max-buckets",
    "bucket-region",
    "id",
    "select-type",
    "optional-object-attributes",
];

/// Operation modifiers that are not markers but change the action or require a bucket+key.
const MODIFIERS: &[&str] = &["versionId", "uploadId", "partNumber"];

/// Where the request points: no bucket, a bucket (or access point), or an object in it.
enum Target {
    Service,
    Bucket(Base),
    Object(Base, String),
}

/// The ARN base of a bucket or access point.
#[derive(Clone)]
pub(crate) enum Base {
    Bucket { partition: String, bucket: String },
    AccessPoint { partition: String, region: String, account: String, name: String },
}

impl Base {
    /// `arn:aws:s3:::bucket` or `arn:aws:s3:REGION:ACCOUNT:accesspoint/NAME`.
    pub fn arn(&self) -> String {
        match self {
            Base::Bucket { partition, bucket } => format!("arn:{partition}:s3:::{bucket}"),
            Base::AccessPoint { partition, region, account, name } => format!("arn:{partition}:s3:{region}:{account}:accesspoint/{name}"),
        }
    }

    /// `arn:aws:s3:::bucket/KEY` or `…:accesspoint/NAME/object/KEY`, with IAM wildcard characters
    /// in the key escaped so the ARN names exactly this key.
    pub fn object_arn(&self, key: &str) -> String {
        let key = escape_policy_chars(key);
        match self {
            Base::Bucket { .. } => format!("{}/{key}", self.arn()),
            Base::AccessPoint { .. } => format!("{}/object/{key}", self.arn()),
        }
    }
}

/// Classify one S3 REST request.
pub(crate) fn classify(req: &AwsRequest, ep: &Endpoint) -> Result<Vec<Permission>, ClassifyError> {
    let params = Params::parse(req.query.unwrap_or("").as_bytes());
    let mut markers = Vec::new();
    for name in params.names() {
        if MARKERS.contains(&name) {
            markers.push(name);
        } else if !(MODIFIERS.contains(&name) || OPTIONS.contains(&name) || name.to_ascii_lowercase().starts_with("x-amz-") || name.starts_with("response-")) {
            return Err(unclassified(format!("S3 {} {} with unknown query parameter {name:?}", req.method, req.path)));
        }
    }
    let marker = match markers.as_slice() {
        [] => None,
        [one] => Some(*one),
        _ => return Err(unclassified(format!("S3 {} {} with several sub-resources {markers:?}", req.method, req.path))),
    };
    let op = Op {
        req,
        marker,
        version: params.get("versionId")?.is_some(),
        upload_id: params.get("uploadId")?.is_some(),
        part_number: params.get("partNumber")?.is_some(),
    };
    match target(req.path, ep)? {
        Target::Service => op.service(),
        Target::Bucket(base) => op.bucket(&base),
        Target::Object(base, key) => op.object(&base, &key, ep),
    }
}

/// Read bucket and key from the virtual host or the path.
fn target(path: &str, ep: &Endpoint) -> Result<Target, ClassifyError> {
    let rest = path.strip_prefix('/').ok_or_else(|| unclassified(format!("S3 path {path:?} is not absolute")))?;
    let partition = ep.partition.arn_name().to_string();
    let (base, raw_key) = if let Some(ap) = &ep.access_point {
        let base = Base::AccessPoint { partition, region: ep.region.clone(), account: ap.account_id.clone(), name: ap.name.clone() };
        (base, rest)
    } else if let Some(bucket) = &ep.bucket {
        let base = Base::Bucket { partition, bucket: bucket.clone() };
        (base, rest)
    } else {
        if rest.is_empty() {
            return Ok(Target::Service);
        }
        let (raw_bucket, raw_key) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket = percent_decode(raw_bucket)?;
        if !is_bucket_name(&bucket) {
            return Err(unclassified(format!("S3 bucket name {bucket:?} is not valid")));
        }
        (Base::Bucket { partition, bucket }, raw_key)
    };
    if raw_key.is_empty() {
        return Ok(Target::Bucket(base));
    }
    Ok(Target::Object(base, percent_decode(raw_key)?))
}

struct Op<'r, 'a> {
    req: &'r AwsRequest<'a>,
    marker: Option<&'r str>,
    version: bool,
    upload_id: bool,
    part_number: bool,
}

impl Op<'_, '_> {
    fn unknown(&self, level: &str) -> ClassifyError {
        unclassified(format!(
            "S3 {} on {level} {} with sub-resource {:?}{}{}{}",
            self.req.method,
            self.req.path,
            self.marker.unwrap_or("none"),
            if self.version { " +versionId" } else { "" },
            if self.upload_id { " +uploadId" } else { "" },
            if self.part_number { " +partNumber" } else { "" },
        ))
    }

    fn header(&self, name: &str) -> Result<Option<&str>, ClassifyError> {
        header(self.req.headers, name)
    }

    fn has_header(&self, name: &str) -> Result<bool, ClassifyError> {
        Ok(self.header(name)?.is_some())
    }

    /// `GET /` lists the caller's buckets; nothing else is addressed to no bucket.
    fn service(&self) -> Result<Vec<Permission>, ClassifyError> {
        if *self.req.method == Method::GET && self.marker.is_none() && !(self.version || self.upload_id || self.part_number) {
            // ListAllMyBuckets supports no resource-level permissions.
            return Ok(vec![permission("s3:ListAllMyBuckets", "*")]);
        }
        Err(self.unknown("the service"))
    }

    fn bucket(&self, base: &Base) -> Result<Vec<Permission>, ClassifyError> {
        if self.version || self.upload_id || self.part_number || self.has_header("x-amz-copy-source")? {
            return Err(self.unknown("bucket"));
        }
        let m: &Method = self.req.method;
        if *m == Method::POST && self.marker == Some("delete") {
            return self.delete_objects(base);
        }
        let action = bucket_action(m, self.marker).ok_or_else(|| self.unknown("bucket"))?;
        let arn = base.arn();
        let mut out = vec![permission(format!("s3:{action}"), &arn)];
        if action == "CreateBucket" {
            // Options on CreateBucket are separate permissions in IAM.
            if self.has_acl_headers()? {
                out.push(permission("s3:PutBucketAcl", &arn));
            }
            if self.header("x-amz-bucket-object-lock-enabled")?.is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                out.push(permission("s3:PutBucketObjectLockConfiguration", &arn));
                out.push(permission("s3:PutBucketVersioning", &arn));
            }
            if self.has_header("x-amz-object-ownership")? {
                out.push(permission("s3:PutBucketOwnershipControls", &arn));
            }
        }
        Ok(out)
    }

    /// `POST ?delete` names its keys only in the XML body: one `s3:DeleteObject[Version]` per key.
    fn delete_objects(&self, base: &Base) -> Result<Vec<Permission>, ClassifyError> {
        let body = self.req.body.ok_or_else(|| unclassified("S3 DeleteObjects without its buffered body (the keys are in the body)"))?;
        let mut out = Vec::new();
        for obj in s3_multi_delete::objects(body)? {
            let action = if obj.version_id.is_some() { "s3:DeleteObjectVersion" } else { "s3:DeleteObject" };
            out.push(permission(action, base.object_arn(&obj.key)));
        }
        if self.has_header("x-amz-bypass-governance-retention")? {
            out.push(permission("s3:BypassGovernanceRetention", base.arn()));
        }
        Ok(out)
    }

    fn object(&self, base: &Base, key: &str, ep: &Endpoint) -> Result<Vec<Permission>, ClassifyError> {
        let m: &Method = self.req.method;
        let arn = base.object_arn(key);
        let versioned = |plain: &str, version: &str| {
            let a = if self.version { version } else { plain };
            format!("s3:{a}")
        };
        let copy_source = self.header("x-amz-copy-source")?;
        if copy_source.is_some() && !(*m == Method::PUT && self.marker.is_none()) {
            return Err(self.unknown("object (with x-amz-copy-source)"));
        }

        // Multipart uploads: `uploadId` (and `partNumber` for a part).
        if self.upload_id {
            if self.marker.is_some() || self.version {
                return Err(self.unknown("object"));
            }
            let action = match (m, self.part_number) {
                (&Method::PUT, true) => "PutObject",
                (&Method::POST, false) => "PutObject",
                (&Method::DELETE, false) => "AbortMultipartUpload",
                (&Method::GET, false) => "ListMultipartUploadParts",
                _ => return Err(self.unknown("object")),
            };
            let mut out = vec![permission(format!("s3:{action}"), &arn)];
            if let Some(source) = copy_source {
                // UploadPartCopy reads the source like CopyObject does.
                out.insert(0, s3_copy_source::read_permission(source, ep)?);
            }
            return Ok(out);
        }

        let action = match (self.marker, m) {
            (None, &Method::GET | &Method::HEAD) => versioned("GetObject", "GetObjectVersion"),
            (None, &Method::PUT) if !self.part_number && !self.version => {
                let mut out = Vec::new();
                if let Some(source) = copy_source {
                    out.push(s3_copy_source::read_permission(source, ep)?);
                }
                out.push(permission("s3:PutObject", &arn));
                out.extend(self.new_object_options(&arn)?);
                return Ok(out);
            }
            (None, &Method::DELETE) if !self.part_number => {
                let mut out = vec![permission(versioned("DeleteObject", "DeleteObjectVersion"), &arn)];
                if self.has_header("x-amz-bypass-governance-retention")? {
                    out.push(permission("s3:BypassGovernanceRetention", &arn));
                }
                return Ok(out);
            }
            (Some("uploads"), &Method::POST) if !self.version && !self.part_number => {
                let mut out = vec![permission("s3:PutObject", &arn)];
                out.extend(self.new_object_options(&arn)?);
                return Ok(out);
            }
            (Some(marker), m) if !self.part_number => {
                let (plain, version) = object_marker_action(marker, m).ok_or_else(|| self.unknown("object"))?;
                let mut out = vec![permission(versioned(plain, version), &arn)];
                if marker == "retention" && self.has_header("x-amz-bypass-governance-retention")? {
                    out.push(permission("s3:BypassGovernanceRetention", &arn));
                }
                return Ok(out);
            }
            _ => return Err(self.unknown("object")),
        };
        Ok(vec![permission(action, arn)])
    }

    /// Headers on PutObject / CopyObject / CreateMultipartUpload that IAM authorizes separately.
    fn new_object_options(&self, arn: &str) -> Result<Vec<Permission>, ClassifyError> {
        let mut out = Vec::new();
        if self.has_acl_headers()? {
            out.push(permission("s3:PutObjectAcl", arn));
        }
        if self.has_header("x-amz-tagging")? {
            out.push(permission("s3:PutObjectTagging", arn));
        }
        if self.has_header("x-amz-object-lock-mode")? || self.has_header("x-amz-object-lock-retain-until-date")? {
            out.push(permission("s3:PutObjectRetention", arn));
        }
        if self.has_header("x-amz-object-lock-legal-hold")? {
            out.push(permission("s3:PutObjectLegalHold", arn));
        }
        Ok(out)
    }

    fn has_acl_headers(&self) -> Result<bool, ClassifyError> {
        for h in ["x-amz-acl", "x-amz-grant-read", "x-amz-grant-read-acp", "x-amz-grant-write", "x-amz-grant-write-acp", "x-amz-grant-full-control"] {
            if self.has_header(h)? {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

/// Bucket-level operations. Several S3 "Delete…" APIs are authorized by the matching "Put…" action.
fn bucket_action(m: &Method, marker: Option<&str>) -> Option<&'static str> {
    use Method as M;
    let get = *m == M::GET;
    let put = *m == M::PUT;
    let del = *m == M::DELETE;
    Some(match marker {
        None if get || *m == M::HEAD => "ListBucket",
        None if put => "CreateBucket",
        None if del => "DeleteBucket",
        Some("versions") if get => "ListBucketVersions",
        Some("location") if get => "GetBucketLocation",
        Some("uploads") if get => "ListBucketMultipartUploads",
        Some("acl") if get => "GetBucketAcl",
        Some("acl") if put => "PutBucketAcl",
        Some("tagging") if get => "GetBucketTagging",
        Some("tagging") if put || del => "PutBucketTagging",
        Some("versioning") if get => "GetBucketVersioning",
        Some("versioning") if put => "PutBucketVersioning",
        Some("lifecycle") if get => "GetLifecycleConfiguration",
        Some("lifecycle") if put || del => "PutLifecycleConfiguration",
        Some("policy") if get => "GetBucketPolicy",
        Some("policy") if put => "PutBucketPolicy",
        Some("policy") if del => "DeleteBucketPolicy",
        Some("policyStatus") if get => "GetBucketPolicyStatus",
        Some("cors") if get => "GetBucketCORS",
        Some("cors") if put || del => "PutBucketCORS",
        Some("encryption") if get => "GetEncryptionConfiguration",
        Some("encryption") if put || del => "PutEncryptionConfiguration",
        Some("website") if get => "GetBucketWebsite",
        Some("website") if put => "PutBucketWebsite",
        Some("website") if del => "DeleteBucketWebsite",
        Some("notification") if get => "GetBucketNotification",
        Some("notification") if put => "PutBucketNotification",
        Some("object-lock") if get => "GetBucketObjectLockConfiguration",
        Some("object-lock") if put => "PutBucketObjectLockConfiguration",
        Some("logging") if get => "GetBucketLogging",
        Some("logging") if put => "PutBucketLogging",
        Some("requestPayment") if get => "GetBucketRequestPayment",
        Some("requestPayment") if put => "PutBucketRequestPayment",
        Some("accelerate") if get => "GetAccelerateConfiguration",
        Some("accelerate") if put => "PutAccelerateConfiguration",
        Some("replication") if get => "GetReplicationConfiguration",
        Some("replication") if put || del => "PutReplicationConfiguration",
        Some("ownershipControls") if get => "GetBucketOwnershipControls",
        Some("ownershipControls") if put || del => "PutBucketOwnershipControls",
        Some("publicAccessBlock") if get => "GetBucketPublicAccessBlock",
        Some("publicAccessBlock") if put || del => "PutBucketPublicAccessBlock",
        Some("analytics") if get => "GetAnalyticsConfiguration",
        Some("analytics") if put || del => "PutAnalyticsConfiguration",
        Some("inventory") if get => "GetInventoryConfiguration",
        Some("inventory") if put || del => "PutInventoryConfiguration",
        Some("metrics") if get => "GetMetricsConfiguration",
        Some("metrics") if put || del => "PutMetricsConfiguration",
        Some("intelligent-tiering") if get => "GetIntelligentTieringConfiguration",
        Some("intelligent-tiering") if put || del => "PutIntelligentTieringConfiguration",
        _ => return None,
    })
}

/// Object-level marker operations: (action, action when `versionId` is given).
fn object_marker_action(marker: &str, m: &Method) -> Option<(&'static str, &'static str)> {
    use Method as M;
    Some(match (marker, m) {
        ("tagging", &M::GET) => ("GetObjectTagging", "GetObjectVersionTagging"),
        ("tagging", &M::PUT) => ("PutObjectTagging", "PutObjectVersionTagging"),
        ("tagging", &M::DELETE) => ("DeleteObjectTagging", "DeleteObjectVersionTagging"),
        ("acl", &M::GET) => ("GetObjectAcl", "GetObjectVersionAcl"),
        ("acl", &M::PUT) => ("PutObjectAcl", "PutObjectVersionAcl"),
        ("retention", &M::GET) => ("GetObjectRetention", "GetObjectRetention"),
        ("retention", &M::PUT) => ("PutObjectRetention", "PutObjectRetention"),
        ("legal-hold", &M::GET) => ("GetObjectLegalHold", "GetObjectLegalHold"),
        ("legal-hold", &M::PUT) => ("PutObjectLegalHold", "PutObjectLegalHold"),
        ("attributes", &M::GET) => ("GetObjectAttributes", "GetObjectVersionAttributes"),
        ("restore", &M::POST) => ("RestoreObject", "RestoreObject"),
        ("select", &M::POST) => ("GetObject", "GetObjectVersion"),
        ("torrent", &M::GET) => ("GetObjectTorrent", "GetObjectVersionTorrent"),
        _ => return None,
    })
}
