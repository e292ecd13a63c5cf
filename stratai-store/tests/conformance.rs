#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    unreachable_pub
)]
//! The conformance suite: one body per behaviour (in `conformance/*.rs`), run against every
//! backend by the test kit's `backend_matrix!` below.
//!
//! Every body creates its own organizations, users, tiers (random slugs and model names) and
//! only asserts on what it created, so the bodies also hold on one shared PostgreSQL database
//! with tests running in parallel. Platform-wide reads (orgs, tiers, platform rules, outbox)
//! are filtered to the test's own ids. Reservations of the suite expire in 2026 or later,
//! except those of `ledger_reclaim_expired`, which lives in 2001, so its `reclaim_expired`
//! never touches another test's reservations.
//!
//! Contract the backends share (and the memory backend defines):
//! - lists are ordered by id (uuid byte order); members and group members by user id;
//!   `memberships_of_user` by organization id; `groups_of_member` by group id; subscriptions
//!   by tier id; tiers by `(sort_order, id)`; rules by `(priority desc, id)`; usage by
//!   `(created_at, request_id)`; outbox by `seq` (dead letters newest first).
//! - timestamps are stored to the microsecond; money exactly.
//!
//! PostgreSQL: the instantiation calls `fresh_db()` of the test kit's PostgreSQL harness (`stratai_testkit::pg`):
//! a fresh database migrated and served by a real app role, dropped when the test ends; `None`
//! (printed) when PostgreSQL is unavailable and CI is not `true`, a panic under `CI=true`.
//! SQLite: a file in a scratch folder of its own, removed when the test ends.

mod conformance {
    pub mod directory;
    pub mod fixtures;
    pub mod implied;
    pub mod invoices;
    pub mod key_vault;
    pub mod leases;
    pub mod ledger;
    pub mod model;
    pub mod outbox;
    pub mod people;
    pub mod rules;
    pub mod tiers;
    pub mod usage;
}

use stratai_testkit::pg;

use conformance::*;

/// A backend under test and what must live as long as the test and be removed after it.
pub struct Backend<S> {
    pub store: S,
    _folder: Option<stratai_testkit::Scratch>,
    _database: Option<pg::PgTestDb>,
}

mod backends {
    use super::Backend;
    use stratai_store::{MemoryStore, SqliteStore};
    use stratai_testkit::Scratch;

    pub async fn memory() -> Option<Backend<MemoryStore>> {
        Some(Backend {
            store: MemoryStore::new(),
            _folder: None,
            _database: None,
        })
    }

    pub async fn sqlite() -> Option<Backend<SqliteStore>> {
        let scratch = Scratch::new();
        let url = format!("sqlite://{}", scratch.join("conformance.db").display());
        let store = SqliteStore::connect(&url).await.unwrap();
        Some(Backend {
            store,
            _folder: Some(scratch),
            _database: None,
        })
    }

    pub async fn postgres() -> Option<Backend<stratai_store::PgStore>> {
        let db = crate::pg::fresh_db().await?;
        Some(Backend {
            store: db.store.clone(),
            _folder: None,
            _database: Some(db),
        })
    }
}

/// Starts `$backend` (see `backends`) and runs the body on its store; a PostgreSQL that cannot
/// be had skips the test (a failure under `CI=true`, in the harness).
macro_rules! on_store {
    ($backend:ident, $body:path) => {
        let Some(backend) = crate::backends::$backend().await else {
            return;
        };
        $body(backend.store.clone()).await;
    };
}

// The suite: each body once per backend (`<body>::<backend>`).
stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in directory:
    org_create_get_find_list,
    org_slug_conflict,
    org_update_keeps_slug_and_creation,
    org_not_found,
    user_create_get_find_update,
    get_users_in_the_order_asked,
    people_in_orgs_counted_once,
    user_email_and_subject_conflict,
    member_add_get_list_update_remove,
    member_errors,
    member_cross_tenant,
    memberships_of_user_spans_orgs,
    group_crud,
    group_name_unique_per_org,
    group_cross_tenant,
    group_members,
    group_member_requires_same_org_membership,
    profiles,
    invitation_create_find_list_revoke,
    invitation_save_renews_pending_all_or_nothing,
    invitation_names_only_own_groups,
    invitation_accept_once,
    invitation_accept_refusals,
    invitation_accept_concurrent_single_use,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in tiers:
    tier_upsert_get_list,
    tier_rate_schedule_round_trip,
    tier_model_and_slug_conflicts,
    subscriptions,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in rules:
    platform_rules,
    org_rules_crud_and_order,
    rules_cross_tenant,
    rule_validation,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in ledger:
    budget_crud,
    budget_cross_tenant,
    reserve_settle_release,
    reserve_all_or_nothing,
    reserve_idempotent,
    settle_idempotent_and_without_reservation,
    settle_after_release_records_spend,
    release_idempotent,
    periods_start_at_zero,
    periods_follow_org_timezone,
    soft_budget_never_refuses,
    alerts_fire_once_per_period,
    ledger_reclaim_expired,
    concurrent_reservations_never_overspend,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in leases:
    settle_total_charges_what_an_earlier_settlement_missed,
    abandoned_leases_follow_heartbeats,
    usage_records_carry_their_lease,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in usage:
    usage_append_idempotent,
    usage_overage_round_trips,
    usage_append_all_or_nothing,
    usage_append_large_batch,
    usage_query_filters,
    usage_aggregate,
    usage_aggregate_paths_agree,
    usage_stream,
    usage_cross_tenant,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in outbox:
    outbox_events_for_directory_changes,
    outbox_delivery,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in key_vault:
    sealed_key_put_find_replace_delete,
    sealed_key_needs_a_membership_and_goes_with_it,
    sealed_key_cross_tenant,
    litellm_key_id_write_back_is_targeted,
    litellm_key_id_write_back_errors_and_tenancy,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in implied:
    member_monthly_budget_is_a_ledger_budget,
    group_monthly_budget_is_a_ledger_budget,
    tier_subscription_monthly_budget_is_a_ledger_budget,
    group_capacity_holds_under_concurrent_adds,
    group_names_are_unique_whatever_their_case,
    unique_conflicts_name_the_field,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in people:
    users_list_search_and_pages,
    user_update_keeps_role_and_activity,
    deactivation_writes_member_events,
    the_last_super_admin_remains,
    concurrent_revocations_leave_a_super_admin,
    group_created_with_members_all_or_nothing,
);

stratai_testkit::backend_matrix!(on_store, [memory, sqlite, postgres], in invoices:
    invoice_draft_issue_pay_round_trip,
    invoice_drafts_replace_and_corrections,
    invoice_life_cycle_refusals,
    invoice_cross_tenant,
);

/// The memory and SQLite ledgers against core's reference model (`LedgerModel`), on random
/// sequences of reserve / settle / release / reclaim across period boundaries.
mod ledger_model {
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        #[test]
        fn memory_ledger_matches_the_model(ops in crate::model::ops()) {
            crate::model::check(|| async { stratai_store::MemoryStore::new() }, ops);
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        #[test]
        fn sqlite_ledger_matches_the_model(ops in crate::model::ops()) {
            crate::model::check(
                || async { stratai_store::SqliteStore::connect("sqlite::memory:").await.unwrap() },
                ops,
            );
        }
    }
}
