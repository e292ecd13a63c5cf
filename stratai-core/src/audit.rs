//! The audit trail (beyond the seed): every change made through the admin API or the UI, as
//! an entry of a hash chain. Each organization has its chain, platform-level changes (the
//! tier catalog, platform rules, people, profiles) one platform chain.
//!
//! Pure: an entry's hash is SHA-256 over the previous entry's hash and the entry's canonical
//! form ([`canonical_json`]: keys sorted, no whitespace, times in microseconds as the
//! databases keep them), so [`verify_chain`] recomputes every link from the stored rows and
//! reports the first entry that was altered, removed or reordered. The stores append under a
//! lock of the chain's head (its last sequence number and hash, kept beside the entries), so
//! removing the newest entries is found too: the head names an entry that is gone.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{OrgId, UserId};

/// The hash before a chain's first entry (64 zeros).
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Which chain an entry belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "chain", content = "org_id", rename_all = "snake_case")]
pub enum AuditChain {
    /// An organization's changes.
    Org(OrgId),
    /// Platform-level changes (no organization).
    Platform,
}

impl AuditChain {
    /// The chain's key in storage: the organization's id, the nil uuid for the platform.
    #[must_use]
    pub fn key(self) -> uuid::Uuid {
        self.org().map_or(uuid::Uuid::nil(), |o| o.as_uuid())
    }

    /// The organization, for an organization's chain.
    #[must_use]
    pub fn org(self) -> Option<OrgId> {
        match self {
            Self::Org(org) => Some(org),
            Self::Platform => None,
        }
    }
}

/// A change to record, before the store gives it its place in the chain.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditDraft {
    /// When the change was made.
    pub at: DateTime<Utc>,
    /// Who made it (the signed-in caller).
    pub actor: Option<UserId>,
    /// The HTTP request it was made by (`x-request-id`).
    pub request_id: Option<String>,
    /// What was done: `<entity>.<verb>`, e.g. `member.update`.
    pub action: String,
    /// The entity changed: `<kind>/<id>[/<id>]`, e.g. `member/<org>/<user>`.
    pub target: String,
    /// The entity before the change (none when created).
    pub before: Option<Value>,
    /// The entity after the change (none when deleted).
    pub after: Option<Value>,
}

/// One entry of an audit chain, as stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditEntry {
    /// The organization (none: the platform chain).
    pub org_id: Option<OrgId>,
    /// Position in its chain, from 1 without gaps.
    pub seq: i64,
    /// When the change was made (microsecond precision).
    pub at: DateTime<Utc>,
    /// Who made it.
    pub actor: Option<UserId>,
    /// The request that made it.
    pub request_id: Option<String>,
    /// `<entity>.<verb>`.
    pub action: String,
    /// The entity changed.
    pub target: String,
    /// The entity before the change: an object, or an array of objects for a change made
    /// to several entities at once (`invitation.save`); null when it was created.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::audit_state))]
    pub before: Option<Value>,
    /// The entity after the change: an object, or an array of objects for a change made to
    /// several entities at once; null when it was deleted.
    #[cfg_attr(feature = "openapi", schema(schema_with = crate::openapi::audit_state))]
    pub after: Option<Value>,
    /// The previous entry's hash ([`GENESIS_HASH`] for the first), hex.
    pub prev_hash: String,
    /// SHA-256 of `prev_hash` and the entry's canonical form, hex.
    pub hash: String,
}

impl AuditEntry {
    /// The entry's chain.
    #[must_use]
    pub fn chain(&self) -> AuditChain {
        self.org_id.map_or(AuditChain::Platform, AuditChain::Org)
    }

    /// The draft as the `seq`-th entry of `chain` after `prev_hash`: the time truncated to
    /// microseconds (what both databases keep), the hash computed.
    #[must_use]
    pub fn seal(chain: AuditChain, seq: i64, prev_hash: &str, draft: &AuditDraft) -> Self {
        let mut entry = Self {
            org_id: chain.org(),
            seq,
            at: draft.at.trunc_subsecs(6),
            actor: draft.actor,
            request_id: draft.request_id.clone(),
            action: draft.action.clone(),
            target: draft.target.clone(),
            before: draft.before.clone(),
            after: draft.after.clone(),
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        entry.hash = entry.computed_hash();
        entry
    }

    /// The hash the entry's content implies (compare with [`AuditEntry::hash`]).
    #[must_use]
    pub fn computed_hash(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(self.prev_hash.as_bytes());
        hasher.update(b"\n");
        hasher.update(self.canonical().as_bytes());
        hex::encode(hasher.finalize())
    }

    /// The canonical form that is hashed: every field but `hash`, keys sorted.
    #[must_use]
    pub fn canonical(&self) -> String {
        let value = serde_json::json!({
            "org_id": self.org_id.map(|o| o.to_string()),
            "seq": self.seq,
            "at": self.at.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
            "actor": self.actor.map(|u| u.to_string()),
            "request_id": self.request_id,
            "action": self.action,
            "target": self.target,
            "before": self.before,
            "after": self.after,
            "prev_hash": self.prev_hash,
        });
        canonical_json(&value)
    }
}

/// `value` as JSON text with object keys sorted and no whitespace: the same text for the same
/// value whatever order a map kept its keys in.
#[must_use]
pub fn canonical_json(value: &Value) -> String {
    let mut out = String::new();
    write_canonical(value, &mut out);
    out
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                if let Some(v) = map.get(key) {
                    write_canonical(v, out);
                }
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// A chain's head as the store keeps it: the newest entry's sequence number and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainHead {
    /// The newest entry's `seq`.
    pub seq: i64,
    /// The newest entry's `hash`.
    pub hash: String,
}

/// A chain as stored, for verification: its entries in `seq` order and its head.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredChain {
    /// The entries, ordered by `seq`.
    pub entries: Vec<AuditEntry>,
    /// The head (none: nothing was ever appended).
    pub head: Option<ChainHead>,
}

/// What is wrong with a chain, at the first entry where it shows.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChainFault {
    /// The entry's content does not hash to its stored hash: it was altered.
    Altered,
    /// The entry does not link to the previous one's hash (an entry between was removed or
    /// replaced, or the link itself was altered).
    BrokenLink,
    /// Sequence numbers skip: the entries between were removed.
    Missing,
    /// The entry belongs to another chain.
    WrongChain,
    /// The head names an entry the chain does not end with: the newest entries were removed
    /// (or the head was altered).
    HeadMismatch,
}

/// The first fault found, where.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainBreak {
    /// The `seq` the fault shows at (for a missing entry: the first missing `seq`).
    pub seq: i64,
    /// What is wrong.
    pub fault: ChainFault,
    /// In words.
    pub detail: String,
}

/// The outcome of [`verify_chain`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ChainReport {
    /// The chain verified.
    pub chain: AuditChain,
    /// Whether every entry is intact and none is missing.
    pub intact: bool,
    /// How many entries were checked.
    pub entries: u64,
    /// The head as stored.
    pub head: Option<ChainHead>,
    /// The first fault, when not intact.
    pub first_break: Option<ChainBreak>,
}

/// Verifies `chain` as stored: `seq` runs 1, 2, ... without gaps, every entry links to the
/// previous hash ([`GENESIS_HASH`] first), every entry hashes to its stored hash, and the
/// last entry is the head. Reports the first fault.
#[must_use]
pub fn verify_chain(which: AuditChain, chain: &StoredChain) -> ChainReport {
    let first_break = find_break(which, chain);
    ChainReport {
        chain: which,
        intact: first_break.is_none(),
        entries: chain.entries.len() as u64,
        head: chain.head.clone(),
        first_break,
    }
}

fn find_break(which: AuditChain, chain: &StoredChain) -> Option<ChainBreak> {
    let fault = |seq, fault, detail: String| Some(ChainBreak { seq, fault, detail });
    let mut prev_hash = GENESIS_HASH.to_owned();
    let mut expected_seq = 1;
    for entry in &chain.entries {
        if entry.chain() != which {
            return fault(
                entry.seq,
                ChainFault::WrongChain,
                format!("entry {} belongs to another chain", entry.seq),
            );
        }
        if entry.seq != expected_seq {
            return fault(
                expected_seq,
                ChainFault::Missing,
                format!(
                    "entries {expected_seq} to {} are missing",
                    entry.seq.saturating_sub(1)
                ),
            );
        }
        if entry.prev_hash != prev_hash {
            return fault(
                entry.seq,
                ChainFault::BrokenLink,
                format!(
                    "entry {} links to `{}`, the previous entry's hash is `{prev_hash}`",
                    entry.seq, entry.prev_hash
                ),
            );
        }
        let computed = entry.computed_hash();
        if computed != entry.hash {
            return fault(
                entry.seq,
                ChainFault::Altered,
                format!(
                    "entry {} hashes to `{computed}`, stored as `{}`",
                    entry.seq, entry.hash
                ),
            );
        }
        prev_hash.clone_from(&entry.hash);
        expected_seq += 1;
    }
    let last = chain.entries.last().map(|e| (e.seq, e.hash.as_str()));
    match (&chain.head, last) {
        (None, None) => None,
        (Some(head), Some((seq, hash))) if head.seq == seq && head.hash == hash => None,
        (Some(head), _) => fault(
            expected_seq,
            ChainFault::HeadMismatch,
            format!(
                "the chain's head is entry {} (`{}`), the chain ends at entry {}",
                head.seq,
                head.hash,
                expected_seq - 1
            ),
        ),
        (None, Some((seq, _))) => fault(
            seq,
            ChainFault::HeadMismatch,
            "the chain has entries but no head".to_owned(),
        ),
    }
}

/// Which entries a listing returns, newest first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditQuery {
    /// Only this actor's changes.
    pub actor: Option<UserId>,
    /// Only actions starting with this (`member.` or `member.update`).
    pub action: Option<String>,
    /// Only targets starting with this.
    pub target: Option<String>,
    /// Only this request's changes.
    pub request_id: Option<String>,
    /// Made at or after.
    pub since: Option<DateTime<Utc>>,
    /// Made before.
    pub until: Option<DateTime<Utc>>,
    /// Only entries before this cursor (from [`AuditEntry`]'s `at`, chain and `seq`):
    /// the previous page's last entry.
    pub before: Option<AuditCursor>,
    /// Page size.
    pub limit: u32,
}

/// A position in the newest-first listing of entries of every chain: ordered by time, then
/// organization (the platform chain first), then `seq`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditCursor {
    /// The entry's time.
    pub at: DateTime<Utc>,
    /// Its chain.
    pub org_id: Option<OrgId>,
    /// Its `seq`.
    pub seq: i64,
}

impl AuditCursor {
    /// The cursor of `entry`.
    #[must_use]
    pub fn of(entry: &AuditEntry) -> Self {
        Self {
            at: entry.at,
            org_id: entry.org_id,
            seq: entry.seq,
        }
    }

    /// The order key of the listing (larger = newer): the platform chain is keyed by the
    /// nil uuid ([`AuditChain::key`]), so it sorts before every organization.
    #[must_use]
    pub fn key(&self) -> (DateTime<Utc>, uuid::Uuid, i64) {
        (
            self.at,
            self.org_id.map_or(uuid::Uuid::nil(), |o| o.as_uuid()),
            self.seq,
        )
    }

    /// Text form for a query string: `<rfc3339>~<org or "platform">~<seq>`.
    #[must_use]
    pub fn encode(&self) -> String {
        format!(
            "{}~{}~{}",
            self.at.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            self.org_id
                .map_or_else(|| "platform".to_owned(), |o| o.to_string()),
            self.seq
        )
    }

    /// Parses [`AuditCursor::encode`]'s text.
    pub fn decode(text: &str) -> Option<Self> {
        let mut parts = text.split('~');
        let at = DateTime::parse_from_rfc3339(parts.next()?)
            .ok()?
            .with_timezone(&Utc);
        let org = parts.next()?;
        let org_id = if org == "platform" {
            None
        } else {
            Some(org.parse().ok()?)
        };
        let seq = parts.next()?.parse().ok()?;
        if parts.next().is_some() {
            return None;
        }
        Some(Self { at, org_id, seq })
    }
}

impl AuditQuery {
    /// Whether `entry` passes the filters (not the cursor or limit): the one definition every
    /// backend's SQL mirrors, and the memory store applies.
    #[must_use]
    pub fn matches(&self, entry: &AuditEntry) -> bool {
        self.actor.is_none_or(|a| entry.actor == Some(a))
            && self
                .action
                .as_deref()
                .is_none_or(|p| entry.action.starts_with(p))
            && self
                .target
                .as_deref()
                .is_none_or(|p| entry.target.starts_with(p))
            && self
                .request_id
                .as_deref()
                .is_none_or(|r| entry.request_id.as_deref() == Some(r))
            && self.since.is_none_or(|t| entry.at >= t)
            && self.until.is_none_or(|t| entry.at < t)
            && self
                .before
                .as_ref()
                .is_none_or(|c| AuditCursor::of(entry).key() < c.key())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use serde_json::json;

    fn draft(n: u32) -> AuditDraft {
        AuditDraft {
            at: DateTime::parse_from_rfc3339("2026-12-07T01:02:03.123456789Z")
                .unwrap()
                .with_timezone(&Utc),
            actor: Some(UserId::from_uuid(uuid::Uuid::nil())),
            request_id: Some(format!("req-{n}")),
            action: "member.update".to_owned(),
            target: format!("member/{n}"),
            before: Some(json!({"b": n, "a": [1, {"z": 1, "y": 2}]})),
            after: Some(json!({"monthly_budget": "5.00"})),
        }
    }

    fn chain(which: AuditChain, n: u32) -> StoredChain {
        let mut entries: Vec<AuditEntry> = Vec::new();
        for i in 1..=n {
            let prev = entries.last().map_or(GENESIS_HASH, |e| e.hash.as_str());
            let e = AuditEntry::seal(which, i64::from(i), prev, &draft(i));
            entries.push(e);
        }
        let head = entries.last().map(|e| ChainHead {
            seq: e.seq,
            hash: e.hash.clone(),
        });
        StoredChain { entries, head }
    }

    #[test]
    fn canonical_form_sorts_keys_at_every_depth() {
        let a = json!({"b": 1, "a": {"d": [1, {"y": 2, "x": 1}], "c": null}});
        assert_eq!(
            canonical_json(&a),
            r#"{"a":{"c":null,"d":[1,{"x":1,"y":2}]},"b":1}"#
        );
    }

    #[test]
    fn an_intact_chain_verifies_and_an_empty_one_too() {
        let org = AuditChain::Org(OrgId::new());
        let report = verify_chain(org, &chain(org, 5));
        assert!(report.intact, "{report:?}");
        assert_eq!(report.entries, 5);
        assert!(verify_chain(org, &StoredChain::default()).intact);
    }

    #[test]
    fn sealing_truncates_to_microseconds_so_a_stored_entry_rehashes() {
        let e = AuditEntry::seal(AuditChain::Platform, 1, GENESIS_HASH, &draft(1));
        assert_eq!(e.at.timestamp_subsec_nanos(), 123_456_000);
        // A database round trip: JSON with its keys in another order.
        let back: AuditEntry = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back.computed_hash(), e.hash);
    }

    #[test]
    fn every_kind_of_tampering_is_found_where_it_is() {
        let which = AuditChain::Org(OrgId::new());
        let good = chain(which, 6);

        let mut altered = good.clone();
        altered.entries[2].after = Some(json!({"monthly_budget": "5000.00"}));
        let r = verify_chain(which, &altered);
        assert_eq!(r.first_break.as_ref().map(|b| b.seq), Some(3));
        assert_eq!(r.first_break.unwrap().fault, ChainFault::Altered);

        let mut actor = good.clone();
        actor.entries[0].actor = None;
        assert_eq!(
            verify_chain(which, &actor).first_break.unwrap().fault,
            ChainFault::Altered
        );

        let mut removed = good.clone();
        removed.entries.remove(3);
        let b = verify_chain(which, &removed).first_break.unwrap();
        assert_eq!((b.seq, b.fault), (4, ChainFault::Missing));

        // Removed and renumbered: the link breaks.
        let mut renumbered = good.clone();
        renumbered.entries.remove(3);
        for e in &mut renumbered.entries[3..] {
            e.seq -= 1;
            e.hash = e.computed_hash();
        }
        let b = verify_chain(which, &renumbered).first_break.unwrap();
        assert_eq!((b.seq, b.fault), (4, ChainFault::BrokenLink));

        let mut tail = good.clone();
        tail.entries.truncate(4);
        let b = verify_chain(which, &tail).first_break.unwrap();
        assert_eq!((b.seq, b.fault), (5, ChainFault::HeadMismatch));

        let other = chain(AuditChain::Platform, 2);
        let b = verify_chain(which, &other).first_break.unwrap();
        assert_eq!(b.fault, ChainFault::WrongChain);
    }

    #[test]
    fn cursors_round_trip_and_queries_filter() {
        let e = AuditEntry::seal(AuditChain::Platform, 3, GENESIS_HASH, &draft(3));
        let c = AuditCursor::of(&e);
        assert_eq!(AuditCursor::decode(&c.encode()), Some(c.clone()));
        assert_eq!(AuditCursor::decode("nonsense"), None);
        let q = AuditQuery {
            action: Some("member.".to_owned()),
            ..AuditQuery::default()
        };
        assert!(q.matches(&e));
        let q = AuditQuery {
            before: Some(c),
            ..AuditQuery::default()
        };
        assert!(!q.matches(&e));
        let q = AuditQuery {
            request_id: Some("req-4".to_owned()),
            ..AuditQuery::default()
        };
        assert!(!q.matches(&e));
    }
}
