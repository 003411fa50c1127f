package credential_broker

import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

decision := {"allow": true, "reason": "the quickstart agent may read repositories", "ttl_seconds": 300} if {
	input.scope.action == "http:GET"
	startswith(input.scope.resource, "https://api.demo.test/repos/")
	input.agent.tenant == "demo"
}
