# credential-broker policy. Evaluated once per permission in a request's scope; every permission
# must be allowed. The input document:
#   input.agent   {agent_id, tenant, labels}
#   input.request {id, protocol, method, host, path, upgrade}
#     path is canonical (dot-segments resolved, `//` merged, encoded unreserved characters decoded;
#     ambiguous paths such as `%2f` or a climb above the root are refused before any policy runs),
#     and exactly that path is forwarded. upgrade is present only on a protocol upgrade
#     (e.g. "websocket"); its scope action is "http:UPGRADE", not the method, so a GET rule never
#     opens a tunnel.
#   input.scope   {service, region, action, resource}   (one permission)
#   input.time    {now_ns}
# The answer: {"allow": bool, "reason": string, "ttl_seconds": number (optional, shortens the credential)}.
package credential_broker

import rego.v1

default decision := {"allow": false, "reason": "no rule allows this request"}

# Reads of the agent's own organisation's repositories.
decision := {"allow": true, "reason": "agents may read their organisation's repositories", "ttl_seconds": 300} if {
	input.scope.action in {"http:GET", "http:HEAD"}
	startswith(input.scope.resource, concat("", ["https://api.github.com/repos/", input.agent.tenant, "/"]))
}

# Issues and comments may be written; nothing else.
decision := {"allow": true, "reason": "agents may comment on issues", "ttl_seconds": 120} if {
	input.scope.action == "http:POST"
	regex.match(`^https://api\.github\.com/repos/[^/]+/[^/]+/issues/[0-9]+/comments$`, input.scope.resource)
}

# The orders service: reads only.
decision := {"allow": true, "reason": "read-only access to the orders service"} if {
	input.scope.action == "http:GET"
	startswith(input.scope.resource, "https://orders.api.internal.example.com/v1/orders")
}
