"""The README's admin session ("An admin session"), driven through a client that
openapi-python-client generated from the server's /openapi.json: a dev token as the super
admin, an organization with its first owner, an invitation (emailed; in dev mode to the
mailbox folder), its public details, the invitee's first sign-in (which joins the invitation),
the link used up, and what the invitee may use.

Usage: admin_session.py BASE_URL PACKAGE (the generated package, importable)
"""

import importlib
import sys


def main():
    base, package = sys.argv[1], sys.argv[2]

    def mod(name):
        return importlib.import_module(f"{package}.{name}")

    models = mod("models")
    Client = importlib.import_module(package).Client
    AuthenticatedClient = importlib.import_module(package).AuthenticatedClient
    dev_token = mod("api.auth.auth_dev_token")
    orgs_create = mod("api.orgs.orgs_create")
    members_add = mod("api.members.members_add")
    invitations_show = mod("api.invitations.invitations_show")
    invitations_accept = mod("api.invitations.invitations_accept")
    tiers_accessible = mod("api.tiers.tiers_accessible")

    anonymous = Client(base_url=base, raise_on_unexpected_status=True)

    def login(email):
        answer = dev_token.sync(client=anonymous, body=models.DevTokenRequest(email=email))
        assert isinstance(answer, models.DevTokenResponse), answer
        assert answer.token_type == "Bearer"
        return AuthenticatedClient(base_url=base, token=answer.token,
                                   raise_on_unexpected_status=True)

    admin = login("admin@localhost")
    org = orgs_create.sync(client=admin, body=models.CreateOrg(
        name="Globex", slug="globex", owner_email="boss@globex.test"))
    assert isinstance(org, models.Organization), org
    assert org.slug == "globex" and org.active

    created = members_add.sync(org.id, client=admin,
                               body=models.InviteSpec(email="ann@globex.test"))
    assert isinstance(created, models.InvitationCreated), created
    assert created.invitation.email == "ann@globex.test"
    assert str(created.invitation.status) == "pending", created.invitation.status

    details = invitations_show.sync(created.token, client=anonymous)
    assert isinstance(details, models.InvitationDetails), details
    assert details.organization == "Globex" and details.email == "ann@globex.test"

    assert str(created.invitation.delivery.status) == "sent", created.invitation.delivery

    # The first sign-in with the invited address joins the organization: the link is used.
    ann = login("ann@globex.test")
    details = invitations_show.sync(created.token, client=anonymous)
    assert str(details.status) == "accepted", details.status
    again = invitations_accept.sync(created.token, client=ann)
    assert isinstance(again, models.ErrorBody), again
    assert str(again.error.code) == "conflict", again.error.code

    tiers = tiers_accessible.sync(client=ann)
    assert isinstance(tiers, models.AccessibleTiers), tiers
    accessible = sorted(t.slug for t in tiers.accessible)
    locked = {t.slug: t for t in tiers.locked}
    assert accessible == ["basic", "standard"], accessible
    assert "premium" in locked and locked["premium"].hint, locked
    print(f"admin session: organization {org.id}, {created.invitation.email} joined at first sign-in, "
          f"accessible {accessible}, locked {sorted(locked)}")


if __name__ == "__main__":
    main()
