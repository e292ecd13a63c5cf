#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]
//! The administration's services (`stratai_store::admin`) on the memory backend, over the
//! first-start seed: what each refuses and what it writes. The server's API tests cover the
//! same services on every backend through HTTP.

use chrono::{TimeDelta, Utc};
use rust_decimal::Decimal;
use stratai_core::OpError;
use stratai_core::tiers::admin::{ChangeRates, UpdateTier};
use stratai_store::Stores;
use stratai_store::admin::tiers;
use stratai_store::seed::{SeedReport, seed};

async fn seeded() -> (Stores, SeedReport) {
    let stores = Stores::memory();
    let report = seed(&stores, "admin@localhost").await.unwrap();
    (stores, report)
}

fn fields(e: OpError) -> Vec<String> {
    match e {
        OpError::Invalid(f) => f.into_iter().map(|f| f.field).collect(),
        other => panic!("not a validation error: {other:?}"),
    }
}

#[tokio::test]
async fn a_tier_cannot_take_a_model_of_another_tier() {
    let (stores, _) = seeded().await;
    let catalog = stores.tiers.list_tiers().await.unwrap();
    let (first, second) = (&catalog[0], &catalog[1]);
    let edit = UpdateTier {
        models: Some(vec![
            first.models[0].to_string(),
            second.models[0].to_string(),
        ]),
        ..UpdateTier::default()
    };
    let refused = tiers::update_tier(stores.tiers.as_ref(), first.id, edit)
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["models[1]"]);
    assert_eq!(stores.tiers.get_tier(first.id).await.unwrap(), *first);

    let edit = UpdateTier {
        name: Some("Entry".into()),
        ..UpdateTier::default()
    };
    let updated = tiers::update_tier(stores.tiers.as_ref(), first.id, edit)
        .await
        .unwrap();
    assert_eq!(updated.name, "Entry");
}

#[tokio::test]
async fn rates_change_from_the_time_stated_and_the_past_is_refused() {
    let (stores, _) = seeded().await;
    let tier = stores.tiers.list_tiers().await.unwrap()[0].clone();
    let now = Utc::now();
    let later = now + TimeDelta::hours(1);
    let change = ChangeRates {
        input_rate_per_million: Decimal::ONE,
        output_rate_per_million: Decimal::TWO,
        effective_from: Some(later),
    };
    let changed = tiers::change_rates(
        stores.tiers.as_ref(),
        tier.id,
        &change,
        now,
        TimeDelta::zero(),
    )
    .await
    .unwrap();
    assert_eq!(changed.effective_from, later);
    assert_eq!(changed.tier.rates_at(later), (Decimal::ONE, Decimal::TWO));
    assert_eq!(
        changed.tier.rates_at(now),
        (tier.input_rate_per_million, tier.output_rate_per_million)
    );
    let past = ChangeRates {
        effective_from: Some(now - TimeDelta::hours(1)),
        ..change
    };
    let refused = tiers::change_rates(
        stores.tiers.as_ref(),
        tier.id,
        &past,
        now,
        TimeDelta::zero(),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(refused), ["effective_from"]);
}

#[tokio::test]
async fn tiers_outside_the_subscription_are_named() {
    let (stores, report) = seeded().await;
    let org = report.internal_org.id;
    let catalog = stores.tiers.list_tiers().await.unwrap();
    let slugs: Vec<_> = catalog.iter().map(|t| t.slug.clone()).collect();
    tiers::check_within_subscription(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        org,
        &slugs,
        "allowed_tiers",
    )
    .await
    .unwrap();
    let mut sub = stores.tiers.list_subscriptions(org).await.unwrap()[0].clone();
    sub.enabled = false;
    stores.tiers.put_subscription(org, &sub).await.unwrap();
    let position = catalog.iter().position(|t| t.id == sub.tier_id).unwrap();
    let refused = tiers::check_within_subscription(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        org,
        &slugs,
        "allowed_tiers",
    )
    .await
    .unwrap_err();
    assert_eq!(fields(refused), [format!("allowed_tiers[{position}]")]);
    let unknown = stratai_core::TierSlug::new("nope").unwrap();
    let refused = tiers::check_known(stores.tiers.as_ref(), &[unknown], "default_tiers")
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["default_tiers[0]"]);
}

#[tokio::test]
async fn budgets_are_created_in_a_known_scope_and_edited_unless_they_follow_a_field() {
    use stratai_core::budget::admin::{BudgetEdit, NewBudget};
    use stratai_core::budget::{BudgetPeriod, BudgetScope};
    use stratai_core::money::Money;
    use stratai_store::admin::budgets;

    let (stores, report) = seeded().await;
    let org = report.internal_org.id;
    let new = |scope| NewBudget {
        org_id: org,
        scope,
        limit: Money::dollars(20),
        period: BudgetPeriod::Weekly,
        hard_limit: true,
        alert_threshold: Decimal::new(8, 1),
    };
    let refused = budgets::create_budget(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        stores.budgets.as_ref(),
        new(BudgetScope::Group(stratai_core::GroupId::new())),
        Utc::now(),
    )
    .await
    .unwrap_err();
    assert_eq!(fields(refused), ["scope.id"]);

    let me = report.super_admin.id;
    let created = budgets::create_budget(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        stores.budgets.as_ref(),
        new(BudgetScope::User(me)),
        Utc::now(),
    )
    .await
    .unwrap();
    let other_org = stratai_core::OrgId::new();
    let found = budgets::locate(stores.budgets.as_ref(), &[other_org, org], created.id)
        .await
        .unwrap();
    assert_eq!((found.id, found.scope), (created.id, created.scope));
    assert!(matches!(
        budgets::locate(stores.budgets.as_ref(), &[other_org], created.id).await,
        Err(OpError::NotFound(_))
    ));

    let edit = BudgetEdit {
        limit: Some(Money::dollars(30)),
        ..BudgetEdit::default()
    };
    let updated = budgets::update_budget(stores.budgets.as_ref(), found, edit, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        stores
            .budgets
            .get_budget(org, created.id)
            .await
            .unwrap()
            .limit,
        Money::dollars(30)
    );
    assert_eq!(updated.limit, Money::dollars(30));
}

#[tokio::test]
async fn usage_days_are_the_organizations_local_days() {
    use stratai_core::usage::{Dimension, DimensionValue, UsageQuery};
    use stratai_store::admin::usage;

    let (stores, report) = seeded().await;
    let mut org = report.internal_org.clone();
    org.settings.timezone = Some("America/New_York".to_owned());
    stores.directory.update_org(&org).await.unwrap();
    let user = report.super_admin.id;
    // 02:00 UTC on the 15th is the evening of the 14th in New York.
    let at = "2026-01-15T02:00:00Z".parse().unwrap();
    let record = stratai_testkit::usage_record(org.id, user)
        .model("claude-sonnet-4-5")
        .cost("0.001")
        .billed("0.002")
        .at(at)
        .build();
    stores.usage.append(org.id, &[record]).await.unwrap();
    let summary = usage::summary(
        stores.directory.as_ref(),
        stores.usage.as_ref(),
        org.id,
        UsageQuery::default(),
        vec![Dimension::Day],
    )
    .await
    .unwrap();
    assert_eq!(summary.timezone, "America/New_York");
    assert_eq!(summary.totals.requests, 1);
    assert_eq!(
        summary.rows[0].key,
        [DimensionValue::Day("2026-01-14".parse().unwrap())]
    );
}

#[tokio::test]
async fn the_last_owner_stays_and_first_members_are_checked() {
    use stratai_core::directory::{Group, NewGroupMember, OrgRole};
    use stratai_store::admin::{groups, members};

    let (stores, report) = seeded().await;
    let org = report.internal_org.id;
    let owner = stores
        .directory
        .get_member(org, report.super_admin.id)
        .await
        .unwrap();
    assert_eq!(owner.role, OrgRole::Owner);
    let demote = members::MemberEdit {
        role: Some(OrgRole::Admin),
        ..members::MemberEdit::default()
    };
    assert!(matches!(
        members::update_member(
            stores.directory.as_ref(),
            stores.tiers.as_ref(),
            stores.guardrails.as_ref(),
            owner.clone(),
            demote,
        )
        .await,
        Err(OpError::Conflict(m)) if m.contains("last owner")
    ));
    assert!(matches!(
        members::check_removable(stores.directory.as_ref(), &owner).await,
        Err(OpError::Conflict(_))
    ));
    let budget = members::MemberEdit {
        monthly_budget: Some(Some(stratai_core::money::Money::dollars(5))),
        ..members::MemberEdit::default()
    };
    let updated = members::update_member(
        stores.directory.as_ref(),
        stores.tiers.as_ref(),
        stores.guardrails.as_ref(),
        owner,
        budget,
    )
    .await
    .unwrap();
    assert_eq!(updated.role, OrgRole::Owner);

    let group = Group::new(org, "Research", Utc::now()).unwrap();
    let me = report.super_admin.id;
    let stranger = stratai_core::UserId::new();
    let listed = [
        NewGroupMember {
            user_id: me,
            role: None,
        },
        NewGroupMember {
            user_id: me,
            role: None,
        },
        NewGroupMember {
            user_id: stranger,
            role: None,
        },
    ];
    let refused = groups::first_members(stores.directory.as_ref(), &group, &listed)
        .await
        .unwrap_err();
    assert_eq!(
        fields(refused),
        ["members[1].user_id", "members[2].user_id"]
    );
    let ok = groups::first_members(stores.directory.as_ref(), &group, &listed[..1])
        .await
        .unwrap();
    assert_eq!(ok[0].group_id, group.id);
}

#[tokio::test]
async fn invoices_are_drafted_of_started_months_and_never_go_back_to_draft() {
    use stratai_core::billing::{BillingMonth, InvoiceState};
    use stratai_store::admin::billing::{self, DraftRequest};

    let (stores, report) = seeded().await;
    let org = report.internal_org.clone();
    let tier = stores.tiers.list_tiers().await.unwrap()[0].clone();
    let at = "2026-01-15T12:00:00Z".parse().unwrap();
    let record = stratai_testkit::usage_record(org.id, report.super_admin.id)
        .tier(tier.id)
        .model(&tier.models[0].to_string())
        .tokens(1_000_000, 0)
        .cost("0.5")
        .billed("1")
        .at(at)
        .build();
    stores.usage.append(org.id, &[record]).await.unwrap();
    let (tiers, usage, invoices) = (&*stores.tiers, &*stores.usage, &*stores.invoices);
    let now = "2026-02-03T00:00:00Z".parse().unwrap();

    let next = DraftRequest {
        month: BillingMonth::new(2026, 3).unwrap(),
        tax_rate: Decimal::ZERO,
        corrects: None,
    };
    let refused = billing::draft_invoice(tiers, usage, invoices, &org, next, now)
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["month"]);

    let january = DraftRequest {
        month: BillingMonth::new(2026, 1).unwrap(),
        ..next
    };
    let draft = billing::draft_invoice(tiers, usage, invoices, &org, january, now)
        .await
        .unwrap();
    assert_eq!(draft.status, InvoiceState::Draft);
    assert_eq!(
        invoices.list_invoices(org.id).await.unwrap(),
        std::slice::from_ref(&draft)
    );

    let refused = billing::set_status(invoices, org.id, draft.id, InvoiceState::Draft, now)
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["status"]);
    let issued = billing::set_status(invoices, org.id, draft.id, InvoiceState::Issued, now)
        .await
        .unwrap();
    assert_eq!(issued.status, InvoiceState::Issued);

    let directory = &*stores.directory;
    let all = |status, month| billing::all_invoices(directory, invoices, status, month);
    assert_eq!(
        all(None, None).await.unwrap(),
        std::slice::from_ref(&issued)
    );
    assert!(
        all(Some(InvoiceState::Draft), None)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        all(None, Some(BillingMonth::new(2026, 2).unwrap()))
            .await
            .unwrap()
            .is_empty()
    );

    let overview = billing::overview(directory, tiers, usage, january.month)
        .await
        .unwrap();
    assert_eq!(overview.rows.len(), 1);
}

#[tokio::test]
async fn the_pricing_report_refuses_its_options_by_field_and_unknown_organizations() {
    use stratai_core::billing::reports::PricingReportSpec;
    use stratai_core::pricing::PriceTable;
    use stratai_store::admin::billing;

    let (stores, report) = seeded().await;
    let (directory, tiers, usage) = (&*stores.directory, &*stores.tiers, &*stores.usage);
    let prices = PriceTable::seed_defaults();
    let from = "2026-01-01T00:00:00Z".parse().unwrap();
    let spec = PricingReportSpec {
        org_id: Some(report.internal_org.id),
        from,
        to: from,
        tz: chrono_tz::UTC,
        margin: None,
        peak_hours: None,
    };
    let now = Utc::now();
    let refused = billing::pricing_report(directory, tiers, usage, &prices, spec.clone(), now)
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["to"]);

    let spec = PricingReportSpec {
        to: from + TimeDelta::days(31),
        ..spec
    };
    billing::pricing_report(directory, tiers, usage, &prices, spec.clone(), now)
        .await
        .unwrap();
    let unknown = PricingReportSpec {
        org_id: Some(stratai_core::OrgId::new()),
        ..spec
    };
    let refused = billing::pricing_report(directory, tiers, usage, &prices, unknown, now)
        .await
        .unwrap_err();
    assert!(matches!(refused, OpError::Store(_) | OpError::NotFound(_)));
}

#[tokio::test]
async fn a_new_organization_is_refused_by_every_field_at_once_or_made_with_its_owner() {
    use stratai_core::directory::OrgRole;
    use stratai_store::admin::orgs::{self, NewOrg, OrgEdit};

    let (stores, _) = seeded().await;
    let (directory, tiers) = (&*stores.directory, &*stores.tiers);
    let now = Utc::now();
    let bad = NewOrg {
        name: "Acme".into(),
        slug: "Not A Slug".into(),
        billing_email: Some("nope".into()),
        tiers: Some(vec!["gold-plated".into()]),
        owner_email: Some("also nope".into()),
        ..NewOrg::default()
    };
    let refused = orgs::create_org(directory, tiers, bad, now)
        .await
        .unwrap_err();
    assert_eq!(
        fields(refused),
        ["slug", "billing_email", "owner_email", "tiers[0]"]
    );

    let good = NewOrg {
        name: "Acme".into(),
        slug: "acme".into(),
        owner_email: Some("owner@acme.test".into()),
        ..NewOrg::default()
    };
    let org = orgs::create_org(directory, tiers, good, now).await.unwrap();
    let members = directory.list_members(org.id).await.unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].role, OrgRole::Owner);
    assert!(!tiers.list_subscriptions(org.id).await.unwrap().is_empty());

    let mut settings = org.settings.clone();
    settings.signup_domains = vec!["acme.test".into()];
    let edit = OrgEdit {
        settings: Some(settings),
        ..OrgEdit::default()
    };
    let refused = orgs::update_org(directory, org.id, edit.clone(), false, now)
        .await
        .unwrap_err();
    assert!(matches!(refused, OpError::Forbidden(_)));
    let updated = orgs::update_org(directory, org.id, edit, true, now)
        .await
        .unwrap();
    assert_eq!(updated.settings.signup_domains, ["acme.test"]);

    let gone = orgs::deactivate_org(directory, org.id, now).await.unwrap();
    assert!(!gone.active);
    let missing = orgs::deactivate_org(directory, stratai_core::OrgId::new(), now)
        .await
        .unwrap_err();
    assert!(matches!(missing, OpError::NotFound(what) if what == "organization"));
}

#[tokio::test]
async fn people_are_listed_a_page_at_a_time_and_the_last_super_admin_stays() {
    use stratai_core::directory::{Email, PlatformRole, User};
    use stratai_store::admin::users;

    let (stores, report) = seeded().await;
    let directory = &*stores.directory;
    let refused = users::list_users(directory, None, Some("not an email"), Some(0))
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["limit", "after"]);

    for name in ["a", "b"] {
        let email = Email::new(format!("{name}@people.test")).unwrap();
        let user = User::new(email, None, PlatformRole::User, Utc::now()).unwrap();
        directory.create_user(&user).await.unwrap();
    }
    let search = Some(" people.test ".to_owned());
    let first = users::list_users(directory, search.clone(), None, Some(1))
        .await
        .unwrap();
    assert_eq!(first.next_after.as_deref(), Some("a@people.test"));
    let second = users::list_users(directory, search, first.next_after.as_deref(), Some(1))
        .await
        .unwrap();
    assert_eq!(second.users[0].email.as_str(), "b@people.test");
    assert_eq!(second.next_after, None);

    let admin = report.super_admin.id;
    let unchanged = users::update_user(directory, admin, Some(PlatformRole::SuperAdmin), None)
        .await
        .unwrap();
    assert_eq!((unchanged.role, unchanged.active), (None, None));
    let refused = users::update_user(directory, admin, None, Some(false))
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        OpError::Conflict(_) | OpError::Store(stratai_core::StoreError::Conflict(_))
    ));
}

#[tokio::test]
async fn audit_filters_are_checked_and_every_chain_is_verified() {
    use futures::TryStreamExt as _;
    use stratai_core::audit::AuditChain;
    use stratai_store::admin::audit::{self, AuditFilter};

    let (stores, report) = seeded().await;
    let (directory, trail) = (&*stores.directory, &*stores.audit);
    let since = Utc::now();
    let bad = [
        AuditFilter {
            limit: Some(0),
            ..AuditFilter::default()
        },
        AuditFilter {
            since: Some(since),
            until: Some(since),
            ..AuditFilter::default()
        },
        AuditFilter {
            before: Some("?".into()),
            ..AuditFilter::default()
        },
    ];
    let refused: Vec<String> = bad.iter().map(|f| f.query().unwrap_err().field).collect();
    assert_eq!(refused, ["limit", "until", "before"]);
    assert_eq!(
        audit::chain_param("platform").unwrap(),
        AuditChain::Platform
    );
    assert_eq!(audit::chain_param("x").unwrap_err().field, "org_id");

    let org = report.internal_org.id;
    let page = audit::list_org(directory, trail, org, &AuditFilter::default())
        .await
        .unwrap();
    assert_eq!(page.next, None);
    let reports = audit::verify_all(directory, trail).await.unwrap();
    assert_eq!(reports[0].chain, AuditChain::Platform);
    assert!(reports.iter().all(|r| r.intact));
    assert_eq!(
        reports.len(),
        1 + directory.list_orgs().await.unwrap().len()
    );

    let chain = audit::export_chain(directory, Some(&org.to_string()))
        .await
        .unwrap();
    let lines: Vec<Vec<u8>> = audit::export_jsonl(stores.audit.clone(), chain)
        .try_collect()
        .await
        .unwrap();
    let entries = reports
        .iter()
        .find(|r| r.chain == chain)
        .map_or(0, |r| r.entries);
    let written = lines.concat().iter().filter(|b| **b == b'\n').count() as u64;
    assert_eq!(written, entries);
}

#[tokio::test]
async fn a_profile_names_its_unknown_tiers_and_each_refused_rule() {
    use stratai_core::directory::{ProfileGuardrail, UserProfile};
    use stratai_core::ports::RuleAction;
    use stratai_core::{TierSlug, ValidationError};
    use stratai_store::admin::profiles::{self, NewProfile, ProfileEdit};

    let (stores, _) = seeded().await;
    let (directory, tiers) = (&*stores.directory, &*stores.tiers);
    let known = stores.tiers.list_tiers().await.unwrap()[0].slug.clone();
    let rule = ProfileGuardrail {
        name: "No secrets".into(),
        description: None,
        rule_type: "content_filter".into(),
        config: serde_json::json!({}),
        action: RuleAction::Log,
        priority: 0,
    };
    let refuse = |_: &stratai_core::ports::RuleRecord| -> Result<(), OpError> {
        Err(ValidationError::new("config", "refused").into())
    };
    let accept = |_: &stratai_core::ports::RuleRecord| -> Result<(), OpError> { Ok(()) };
    let new = NewProfile {
        name: "Contractor".into(),
        description: Some("  ".into()),
        default_tiers: vec![TierSlug::new("gold-plated").unwrap()],
        available_to: None,
        default_guardrails: vec![rule.clone()],
    };
    let now = Utc::now();
    let refused = profiles::create_profile(directory, tiers, new.clone(), &accept, now)
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["default_tiers[0]"]);
    let new = NewProfile {
        default_tiers: vec![known],
        ..new
    };
    let refused = profiles::create_profile(directory, tiers, new.clone(), &refuse, now)
        .await
        .unwrap_err();
    assert_eq!(fields(refused), ["default_guardrails[0].config"]);
    let profile: UserProfile = profiles::create_profile(directory, tiers, new, &accept, now)
        .await
        .unwrap();
    assert_eq!(profile.description, None);

    let edit = ProfileEdit {
        default_guardrails: Some(vec![rule.clone(), rule]),
        ..ProfileEdit::default()
    };
    let (_, members) = profiles::update_profile(
        directory,
        tiers,
        &*stores.guardrails,
        profile.id,
        edit,
        &accept,
        now,
    )
    .await
    .unwrap();
    assert_eq!(members, Some(0));
}
