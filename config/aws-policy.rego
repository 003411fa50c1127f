# Policy for AWS routes. input.scope.action is the IAM action (s3:GetObject), input.scope.resource
# its ARN (arn:aws:s3:::bucket/key); input.scope.service and input.scope.region come from the host.
# Credential-vending actions (sts:AssumeRole*, iam:CreateAccessKey, secretsmanager:GetSecretValue…)
# are refused by the broker before the policy is asked.
package credential_broker

import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

tenant_bucket := concat("", ["arn:aws:s3:::", input.agent.tenant, "-agent-data"])

# The tenant's own bucket: read and write objects, list it.
decision := {"allow": true, "reason": "the tenant's data bucket", "ttl_seconds": 300} if {
	input.scope.action in {"s3:GetObject", "s3:PutObject", "s3:ListBucket", "s3:AbortMultipartUpload", "s3:ListMultipartUploadParts"}
	some resource in {tenant_bucket, concat("", [tenant_bucket, "/"])}
	startswith(input.scope.resource, resource)
}

# One DynamoDB table, items only.
decision := {"allow": true, "reason": "items of the tenant's table"} if {
	input.scope.action in {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}
	input.scope.resource == concat("", ["arn:aws:dynamodb:us-east-1:123456789012:table/", input.agent.tenant, "-tasks"])
}
