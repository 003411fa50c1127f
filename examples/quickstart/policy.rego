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

# Postgres (every statement, per table): orders may be read; customers holds personal data and is
# off limits whatever the statement; deleting needs a human. The rules never overlap.
decision := {"allow": true, "reason": "the agent may open sessions on shop"} if {
	input.scope.action == "postgres:CONNECT"
	endswith(input.scope.resource, "/shop")
}

decision := {"allow": true, "reason": "the agent may read orders"} if {
	input.scope.action == "postgres:SELECT"
	endswith(input.scope.resource, "/shop/public.orders")
}

decision := {"allow": false, "reason": "customers holds personal data; agents may not touch it"} if {
	startswith(input.scope.action, "postgres:")
	endswith(input.scope.resource, "/shop/public.customers")
}

decision := {"allow": false, "reason": "deleting rows needs a human"} if {
	input.scope.action == "postgres:DELETE"
	not endswith(input.scope.resource, "/shop/public.customers")
}
