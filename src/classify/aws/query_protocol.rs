//! The AWS Query protocol: `Action=Operation&Version=…&…`, in an
//! `application/x-www-form-urlencoded` body (POST, what the SDKs send) or the URL query (GET).

use super::params::Params;
use super::services::{self, Input};
use super::{header, unclassified, AwsRequest, ClassifyError, Ctx, Permission};

pub(crate) fn classify(req: &AwsRequest, service: &str, ctx: &Ctx) -> Result<Vec<Permission>, ClassifyError> {
    let mut params = Params::parse(req.query.unwrap_or("").as_bytes());
    if let Some(body) = req.body.filter(|b| !b.is_empty()) {
        let content_type = header(req.headers, "content-type")?.unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
            return Err(unclassified(format!("{service} request with a {content_type:?} body and no X-Amz-Target")));
        }
        // Query and body are one parameter list to AWS; a name in both is refused by `get`.
        params.extend(Params::parse(body));
    }
    let action = params.get("Action")?.ok_or_else(|| unclassified(format!("{} {} to {service} without Action", req.method, req.path)))?;
    if service != "sqs" && req.path != "/" {
        return Err(unclassified(format!("{service} {action} on path {}", req.path)));
    }
    let input = Input::Query { params: &params, path: req.path };
    services::permissions(service, action, &input, ctx)
}
