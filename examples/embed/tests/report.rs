//! The pilot's report says what the README promises.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use stratai_embed_example::{Ask, Pilot, Verdict, handle, pilot_clock, report};

fn lines_after<'a>(text: &'a str, start: &str, n: usize) -> Vec<&'a str> {
    let mut it = text.lines().skip_while(|l| !l.contains(start));
    (0..n).filter_map(|_| it.next()).collect()
}

#[test]
fn the_seed_scenario_is_denied_with_upgrade_to_premium() {
    let text = report(pilot_clock()).unwrap();
    let block = lines_after(
        &text,
        "[DENY ] dana@acme.example -> claude-opus-4-5-20251101",
        5,
    );
    assert_eq!(
        block,
        [
            "  [DENY ] dana@acme.example -> claude-opus-4-5-20251101 (Premium tier)",
            "          - your organization does not subscribe to Premium",
            "          - your organization's settings do not allow Premium",
            "          - Premium is not enabled for you in this organization",
            "          hint: Upgrade to Premium",
        ]
    );
}

#[test]
fn the_report_shows_each_kind_of_decision() {
    let text = report(pilot_clock()).unwrap();
    for expected in [
        "  [DENY ] dana@acme.example -> gpt-4o (max_tokens 4000)",
        "          worst case $0.064244: user budget exceeded: $0.05 of $5 left, $0.064244 needed",
        "  [ALLOW] dana@acme.example -> gpt-4o (Standard tier)",
        "  [ALLOW] bob@stratai.example -> claude-opus-4-5-20251101 (Premium tier)",
        "          - restricted by group Marketing",
        "  [WARN ] carol@stratai.example -> gpt-4o (Standard tier)",
        "          - model `gpt-7` is not in any tier of the catalog",
        "  Premium   locked   [Unlock Premium] your organization does not subscribe to Premium; your organization's settings do not allow Premium; Premium is not enabled for you in this organization",
        "  [DENY ] erin@acme.example view_org_usage on org internal: not a member of the organization",
        "  [ALLOW] bob@stratai.example view_group_usage on group Engineering",
        "  accept as Frank@Acme.example: accepted, joins acme as a member",
        "  accept again: refused (the invitation is accepted, not pending)",
        "  acme      member dana@acme.example budget: $4.959684 of $5.00 spent (alert at 80%)",
    ] {
        assert!(
            text.lines().any(|l| l == expected),
            "missing line {expected:?} in:\n{text}"
        );
    }
    // The invoice adds up.
    let invoice = lines_after(&text, "7. Draft invoice for acme", 6);
    assert!(
        invoice[3].trim_start().starts_with("subtotal") && invoice[3].ends_with("$8.12"),
        "{invoice:?}"
    );
    assert!(invoice[5].ends_with("$9.66"), "{invoice:?}");
}

#[test]
fn the_report_is_deterministic() {
    assert_eq!(
        report(pilot_clock()).unwrap(),
        report(pilot_clock()).unwrap()
    );
}

#[test]
fn a_refused_request_reserves_and_bills_nothing() {
    let pilot = Pilot::build(pilot_clock()).unwrap();
    let before = pilot.usage().unwrap().len();
    let acme = pilot.acme.id;
    let verdict = handle(
        &pilot,
        &Ask {
            user: "dana",
            org: acme,
            model: "gpt-4o",
            prompt: "hi",
            max_tokens: Some(100_000),
            answer_tokens: 10,
        },
    )
    .unwrap();
    assert!(
        matches!(verdict, Verdict::BudgetDenied { .. }),
        "{verdict:?}"
    );
    assert_eq!(pilot.usage().unwrap().len(), before);
    for s in pilot.budget_states().unwrap() {
        assert_eq!(s.reserved, stratai_core::Money::ZERO);
    }
}

#[test]
fn the_binary_prints_the_report() {
    let out = Command::new(env!("CARGO_BIN_EXE_stratai-embed-example"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout, report(pilot_clock()).unwrap());
    assert!(stdout.contains("hint: Upgrade to Premium"));
}
