//! Builders shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use chrono::{DateTime, Utc};
use serde_json::Value;
use stratai_core::gateway::ChatMessage;
use stratai_core::ports::{RuleAction, RuleRecord, RuleScope};
use stratai_core::{GroupId, OrgId, RuleId, TierId, UserId};
use stratai_guardrails::{KnownScopes, Policy, Principal};
use uuid::Uuid;

/// A deterministic id from a small number (readable in failures, stable in snapshots).
pub fn uuid(n: u128) -> Uuid {
    Uuid::from_u128(n)
}

pub fn at(text: &str) -> DateTime<Utc> {
    text.parse().unwrap()
}

pub fn record(
    id: u128,
    name: &str,
    rule_type: &str,
    config: Value,
    scope: RuleScope,
    action: RuleAction,
) -> RuleRecord {
    RuleRecord {
        id: RuleId::from_uuid(uuid(id)),
        name: name.to_owned(),
        description: None,
        rule_type: rule_type.to_owned(),
        config,
        scope,
        action,
        priority: 0,
        active: true,
        created_at: DateTime::<Utc>::UNIX_EPOCH,
    }
}

pub fn user_message(text: &str) -> Vec<ChatMessage> {
    vec![ChatMessage {
        role: "user".to_owned(),
        content: text.to_owned(),
    }]
}

/// A small world: two orgs, two tiers, two groups and three members.
pub struct World {
    pub org: OrgId,
    pub other_org: OrgId,
    pub basic: TierId,
    pub premium: TierId,
    pub marketing: GroupId,
    pub engineering: GroupId,
    pub alice: UserId,
    pub bob: UserId,
    pub carol: UserId,
}

impl World {
    pub fn new() -> Self {
        World {
            org: OrgId::from_uuid(uuid(0x100)),
            other_org: OrgId::from_uuid(uuid(0x101)),
            basic: TierId::from_uuid(uuid(0x200)),
            premium: TierId::from_uuid(uuid(0x201)),
            marketing: GroupId::from_uuid(uuid(0x300)),
            engineering: GroupId::from_uuid(uuid(0x301)),
            alice: UserId::from_uuid(uuid(0x400)),
            bob: UserId::from_uuid(uuid(0x401)),
            carol: UserId::from_uuid(uuid(0x402)),
        }
    }

    pub fn known(&self) -> KnownScopes {
        let mut k = KnownScopes::new();
        k.add_org(self.org)
            .add_org(self.other_org)
            .add_tier(self.basic)
            .add_tier(self.premium)
            .add_group(self.org, self.marketing)
            .add_group(self.org, self.engineering)
            .add_member(self.org, self.alice)
            .add_member(self.org, self.bob)
            .add_member(self.other_org, self.carol);
        k
    }

    pub fn alice(&self) -> Principal {
        Principal {
            org_id: self.org,
            user_id: self.alice,
            groups: vec![self.marketing],
        }
    }

    pub fn bob(&self) -> Principal {
        Principal {
            org_id: self.org,
            user_id: self.bob,
            groups: vec![self.engineering],
        }
    }

    pub fn carol(&self) -> Principal {
        Principal {
            org_id: self.other_org,
            user_id: self.carol,
            groups: vec![],
        }
    }

    pub fn compile(&self, records: &[RuleRecord]) -> Policy {
        Policy::compile(records, &self.known(), 1).unwrap()
    }
}
