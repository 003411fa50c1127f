package credential_broker

import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "the quickstart agent may read repositories", "ttl_seconds": 300} if {
	input.scope.action == "http:GET"
	startswith(input.scope.resource, "https://api.demo.test/repos/")
	input.agent.tenant == "demo"
}

# AWS: objects in the demo bucket may be read and written; the bucket may be made and listed.
decision := {"allow": true, "reason": "the demo agent's bucket", "ttl_seconds": 300} if {
	input.scope.action in {"s3:CreateBucket", "s3:ListBucket", "s3:PutObject", "s3:GetObject"}
	some prefix in {"arn:aws:s3:::demo-agent-data", "arn:aws:s3:::demo-agent-data/"}
	startswith(input.scope.resource, prefix)
}
