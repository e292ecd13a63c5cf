"""Seeds a running server for Schemathesis: a customer organization with a member, a group,
a budget, guardrail rules and a profile, so every path parameter names something that exists.
Writes a schemathesis.toml (the ids, the super admin's token, the organization the gateway
routes act in) to the path given.

Usage: seed.py BASE_URL CONFIG_OUT
"""

import json
import sys
import time
import urllib.request


def call(base, method, path, token=None, body=None):
    req = urllib.request.Request(base + path, method=method)
    if token:
        req.add_header("authorization", f"Bearer {token}")
    data = None
    if body is not None:
        req.add_header("content-type", "application/json")
        data = json.dumps(body).encode()
    with urllib.request.urlopen(req, data) as r:
        text = r.read()
        return json.loads(text) if text else None


def token_for(base, email):
    return call(base, "POST", "/auth/dev/token", body={"email": email})["token"]


def main():
    base, out = sys.argv[1], sys.argv[2]
    admin = token_for(base, "admin@localhost")
    org = call(base, "POST", "/api/organizations", admin,
               {"name": "Fuzz", "slug": "fuzz", "owner_email": "owner@fuzz.test"})
    org_id = org["id"]
    invite = call(base, "POST", f"/api/organizations/{org_id}/members", admin,
                  {"email": "member@fuzz.test"})
    # the invitee's first sign-in joins the pending invitation
    member = token_for(base, "member@fuzz.test")
    user_id = call(base, "GET", "/api/me", member)["user"]["id"]
    # a pending invitation, for the public token route
    pending_invite = call(base, "POST", f"/api/organizations/{org_id}/members", admin,
                          {"email": "pending@fuzz.test"})
    pending = pending_invite["token"]
    invoice = call(base, "POST", f"/api/organizations/{org_id}/invoices", admin,
                   {"month": time.strftime("%Y-%m", time.gmtime()), "tax_rate": "0.2"})
    group = call(base, "POST", f"/api/organizations/{org_id}/groups", admin, {"name": "Fuzzers"})
    call(base, "POST", f"/api/groups/{group['id']}/members", admin, {"user_id": user_id})
    tier_id = call(base, "GET", "/api/tiers", admin)[0]["id"]
    budget = call(base, "POST", "/api/budgets", admin,
                  {"org_id": org_id, "scope": {"type": "org"},
                   "limit": "100", "period": "monthly"})
    rule = {"name": "no secrets", "rule_type": "content_filter",
            "config": {"blocked_topics": ["secret"]}, "action": "block"}
    org_rule = call(base, "POST", f"/api/organizations/{org_id}/guardrails", admin,
                    {**rule, "scope": {"level": "org"}})
    platform_rule = call(base, "POST", "/api/guardrails", admin,
                         {**rule, "scope": {"level": "global"}})
    # What the DELETE operations remove, apart from what every other operation uses (a
    # deleted group would make the group operations after it answer 404).
    doomed_org = call(base, "POST", "/api/organizations", admin,
                      {"name": "Doomed", "slug": "doomed", "owner_email": "owner@doomed.test"})
    doomed_group = call(base, "POST", f"/api/organizations/{org_id}/groups", admin,
                        {"name": "Doomed"})
    doomed_invite = call(base, "POST", f"/api/organizations/{org_id}/members", admin,
                         {"email": "doomed@fuzz.test"})
    doomed_token = token_for(base, "doomed@fuzz.test")  # joins at first sign-in
    doomed_pending = call(base, "POST", f"/api/organizations/{org_id}/members", admin,
                          {"email": "revoked@fuzz.test"})["invitation"]["id"]
    doomed_user = call(base, "GET", "/api/me", doomed_token)["user"]["id"]
    doomed_org_rule = call(base, "POST", f"/api/organizations/{org_id}/guardrails", admin,
                           {**rule, "scope": {"level": "org"}})
    doomed_platform_rule = call(base, "POST", "/api/guardrails", admin,
                                {**rule, "scope": {"level": "global"}})

    # The gateway routes as an integrator calls them. The super admin belongs to several
    # organizations (the seeded `internal` one, the admin session's), so it names the one a
    # call acts in with `x-stratai-org`; without it the server answers 400
    # `organization_required`, as the document says.
    internal = next(o for o in call(base, "GET", "/api/organizations", admin)
                    if o["slug"] == "internal")
    admin_orgs = {m["org_id"] for m in call(base, "GET", "/api/me", admin)["memberships"]}
    assert internal["id"] in admin_orgs, "the super admin is not a member of `internal`"
    with open(out, "w") as f:
        f.write(f"""# written by scripts/api-check/seed.py
headers = {{ Authorization = "Bearer {admin}" }}

# A schema-valid request may still be refused with 422 for what JSON Schema cannot say: a
# reference to something that does not exist in the organization (`scope.id`, `user_id`), a
# rule between fields (`to` after `from`, `default_tier` among `allowed_tiers`), a guardrail
# config checked by its rule type, a CSV header. Every other check keeps its defaults.
[checks.positive_data_acceptance]
expected-statuses = ["2xx", "3xx", "401", "403", "404", "409", "422", "429", "5xx"]

[parameters]
"path.org_id" = "{org_id}"
"path.user_id" = "{user_id}"
"path.group_id" = "{group['id']}"
"path.tier_id" = "{tier_id}"
"path.budget_id" = "{budget['id']}"
"path.token" = "{pending}"
"path.invoice_id" = "{invoice['id']}"
"path.invitation_id" = "{pending_invite['invitation']['id']}"

[[operations]]
include-path-regex = "^/api/organizations/"
exclude-method = ["DELETE"]
parameters = {{ "path.rule_id" = "{org_rule['id']}" }}

[[operations]]
include-path-regex = "^/v1/|^/api/explain$"
parameters = {{ "header.x-stratai-org" = "internal" }}

[[operations]]
include-path-regex = "^/api/guardrails/"
exclude-method = ["DELETE"]
parameters = {{ "path.rule_id" = "{platform_rule['id']}" }}

[[operations]]
include-name = ["DELETE /api/organizations/{{org_id}}"]
parameters = {{ "path.org_id" = "{doomed_org['id']}" }}

[[operations]]
include-name = ["DELETE /api/organizations/{{org_id}}/members/{{user_id}}"]
parameters = {{ "path.user_id" = "{doomed_user}" }}

[[operations]]
include-name = ["DELETE /api/organizations/{{org_id}}/invitations/{{invitation_id}}"]
parameters = {{ "path.invitation_id" = "{doomed_pending}" }}

[[operations]]
include-name = ["DELETE /api/groups/{{group_id}}"]
parameters = {{ "path.group_id" = "{doomed_group['id']}" }}

[[operations]]
include-name = ["DELETE /api/organizations/{{org_id}}/guardrails/{{rule_id}}"]
parameters = {{ "path.rule_id" = "{doomed_org_rule['id']}" }}

[[operations]]
include-name = ["DELETE /api/guardrails/{{rule_id}}"]
parameters = {{ "path.rule_id" = "{doomed_platform_rule['id']}" }}
""")


if __name__ == "__main__":
    main()
