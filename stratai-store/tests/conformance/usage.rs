//! UsageStore: batched idempotent append, queries, aggregation, streamed export.

use chrono::{Duration, NaiveDate};
use futures::{StreamExt, TryStreamExt};
use stratai_core::usage::{Dimension, DimensionValue, UsageQuery, UsageRecord, UsageTotals};
use stratai_core::{ModelId, OrgId, RequestId, UserId};

use super::fixtures::*;

pub async fn usage_append_idempotent<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    let batch: Vec<UsageRecord> = (0..3)
        .map(|i| record(o.id, u.id, now() + Duration::seconds(i), "0.01"))
        .collect();
    let outcome = store.append(o.id, &batch).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (3, 0));
    let mut more = batch.clone();
    more.push(record(o.id, u.id, now(), "0.02"));
    let outcome = store.append(o.id, &more).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 3));
    // A request id twice within one batch counts once.
    let twice = record(o.id, u.id, now(), "0.03");
    let outcome = store
        .append(o.id, &[twice.clone(), twice.clone()])
        .await
        .unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 1));
    assert_eq!(
        store.get(o.id, batch[1].request_id).await.unwrap(),
        batch[1]
    );
    assert_eq!(store.get(o.id, twice.request_id).await.unwrap(), twice);
    assert_not_found(store.get(o.id, RequestId::new()).await);
    let empty = store.append(o.id, &[]).await.unwrap();
    assert_eq!((empty.inserted, empty.duplicates), (0, 0));
}

/// A record's overage (what it billed beyond its reservation) is kept as written, by `get`,
/// `query` and the stream alike; records without one read back zero.
pub async fn usage_overage_round_trips<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    let mut over = record(o.id, u.id, now(), "0.0005");
    over.overage = money("0.000123");
    let plain = record(o.id, u.id, now() + Duration::seconds(1), "0.0001");
    store
        .append(o.id, &[over.clone(), plain.clone()])
        .await
        .unwrap();
    assert_eq!(store.get(o.id, over.request_id).await.unwrap(), over);
    assert_eq!(
        store.get(o.id, plain.request_id).await.unwrap().overage,
        money("0")
    );
    let listed = store.query(o.id, &UsageQuery::default(), 10).await.unwrap();
    assert_eq!(listed, vec![over.clone(), plain.clone()]);
    let streamed: Vec<UsageRecord> = store
        .stream(o.id, UsageQuery::default())
        .try_collect()
        .await
        .unwrap();
    assert_eq!(streamed, vec![over, plain]);
}

pub async fn usage_append_all_or_nothing<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let ua = member(&store, a.id).await;
    let ub = member(&store, b.id).await;
    let gb = group(&store, b.id, "B's").await;
    let good = record(a.id, ua.id, now(), "1");

    let foreign = record(b.id, ub.id, now(), "1");
    assert_tenant_mismatch(store.append(a.id, &[good.clone(), foreign]).await);
    let mut in_b_group = record(a.id, ua.id, now(), "1");
    in_b_group.group_id = Some(gb.id);
    assert_not_found(store.append(a.id, &[good.clone(), in_b_group]).await);
    let ghost_user = record(a.id, UserId::new(), now(), "1");
    assert_not_found(store.append(a.id, &[good.clone(), ghost_user]).await);
    let ghost = OrgId::new();
    assert_not_found(
        store
            .append(ghost, &[record(ghost, ua.id, now(), "1")])
            .await,
    );
    assert_not_found(store.get(a.id, good.request_id).await);
    assert!(
        store
            .query(a.id, &UsageQuery::default(), 100)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A batch larger than one statement's chunk (PostgreSQL inserts 10,000 records per
/// statement): still all or nothing, and every record once.
pub async fn usage_append_large_batch<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    let mut batch: Vec<UsageRecord> = (0..10_001)
        .map(|_| record(o.id, u.id, now(), "0.001"))
        .collect();
    let good_last = batch[10_000].clone();
    batch[10_000].user_id = UserId::new();
    assert_not_found(store.append(o.id, &batch).await);
    assert_not_found(store.get(o.id, batch[0].request_id).await);
    batch[10_000] = good_last;
    let outcome = store.append(o.id, &batch).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (10_001, 0));
    let outcome = store.append(o.id, &batch[9_990..]).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (0, 11));
    let totals = store
        .aggregate(o.id, &UsageQuery::default(), &[])
        .await
        .unwrap();
    assert_eq!(totals.len(), 1);
    assert_eq!(totals[0].totals.requests, 10_001);
}

pub async fn usage_query_filters<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    let v = member(&store, o.id).await;
    let g = group(&store, o.id, "G").await;
    let t = tier(&store).await;
    let mut records = Vec::new();
    for i in 0..6i64 {
        let mut r = record(
            o.id,
            if i % 2 == 0 { u.id } else { v.id },
            now() + Duration::hours(i),
            "0.5",
        );
        if i < 3 {
            r.group_id = Some(g.id);
            r.tier_id = Some(t.id);
            r.model = t.models[0].clone();
        }
        records.push(r);
    }
    // Appended out of order: queries return oldest first.
    let mut shuffled = records.clone();
    shuffled.reverse();
    store.append(o.id, &shuffled).await.unwrap();

    let ids = |rs: Vec<UsageRecord>| rs.into_iter().map(|r| r.request_id).collect::<Vec<_>>();
    let all = ids(records.clone());
    assert_eq!(
        ids(store
            .query(o.id, &UsageQuery::default(), 100)
            .await
            .unwrap()),
        all
    );
    assert_eq!(
        ids(store.query(o.id, &UsageQuery::default(), 2).await.unwrap()),
        all[..2]
    );
    let window = UsageQuery {
        from: Some(now() + Duration::hours(1)),
        to: Some(now() + Duration::hours(4)),
        ..UsageQuery::default()
    };
    assert_eq!(
        ids(store.query(o.id, &window, 100).await.unwrap()),
        all[1..4]
    );
    let of_u = UsageQuery {
        user_id: Some(u.id),
        ..UsageQuery::default()
    };
    assert_eq!(
        ids(store.query(o.id, &of_u, 100).await.unwrap()),
        vec![all[0], all[2], all[4]]
    );
    let of_g = UsageQuery {
        group_id: Some(g.id),
        ..UsageQuery::default()
    };
    assert_eq!(ids(store.query(o.id, &of_g, 100).await.unwrap()), all[..3]);
    let of_t = UsageQuery {
        tier_id: Some(t.id),
        user_id: Some(v.id),
        ..UsageQuery::default()
    };
    assert_eq!(
        ids(store.query(o.id, &of_t, 100).await.unwrap()),
        vec![all[1]]
    );
    let of_m = UsageQuery {
        model: Some(ModelId::new("claude-sonnet-4-5").unwrap()),
        ..UsageQuery::default()
    };
    assert_eq!(ids(store.query(o.id, &of_m, 100).await.unwrap()), all[3..]);
}

pub async fn usage_aggregate<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    let v = member(&store, o.id).await;
    let g = group(&store, o.id, "G").await;
    let day1 = now();
    let day2 = now() + Duration::days(1);
    let mut r1 = record(o.id, u.id, day1, "0.1");
    r1.group_id = Some(g.id);
    let r2 = record(o.id, u.id, day2, "0.2");
    let mut r3 = record(o.id, v.id, day2 + Duration::hours(1), "0.3");
    r3.input_tokens = 7;
    r3.output_tokens = 3;
    r3.provider_cost = money("0.000001");
    store.append(o.id, &[r1, r2, r3]).await.unwrap();

    let total = store
        .aggregate(o.id, &UsageQuery::default(), &[])
        .await
        .unwrap();
    assert_eq!(total.len(), 1);
    assert!(total[0].key.is_empty());
    assert_eq!(
        total[0].totals,
        UsageTotals {
            requests: 3,
            input_tokens: 2_007,
            output_tokens: 1_003,
            provider_cost: money("0.002001"),
            billed_amount: money("0.6"),
        },
        "sums are exact"
    );

    let by_user = store
        .aggregate(o.id, &UsageQuery::default(), &[Dimension::User])
        .await
        .unwrap();
    let mut users = [u.id, v.id];
    users.sort();
    assert_eq!(
        by_user.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        users
            .iter()
            .map(|id| vec![DimensionValue::User(*id)])
            .collect::<Vec<_>>(),
        "rows come sorted by key"
    );
    let u_row = by_user
        .iter()
        .find(|r| r.key == vec![DimensionValue::User(u.id)])
        .unwrap();
    assert_eq!(u_row.totals.billed_amount, money("0.3"));
    assert_eq!(u_row.totals.requests, 2);

    let by_day_group = store
        .aggregate(
            o.id,
            &UsageQuery::default(),
            &[Dimension::Day, Dimension::Group],
        )
        .await
        .unwrap();
    let d1 = NaiveDate::from_ymd_opt(2026, 1, 15).unwrap();
    let d2 = NaiveDate::from_ymd_opt(2026, 1, 16).unwrap();
    let keys: Vec<_> = by_day_group.iter().map(|r| r.key.clone()).collect();
    assert_eq!(
        keys,
        vec![
            vec![DimensionValue::Day(d1), DimensionValue::Group(Some(g.id))],
            vec![DimensionValue::Day(d2), DimensionValue::Group(None)],
        ]
    );
    assert_eq!(by_day_group[1].totals.billed_amount, money("0.5"));

    let filtered = store
        .aggregate(
            o.id,
            &UsageQuery {
                from: Some(day2),
                ..UsageQuery::default()
            },
            &[
                Dimension::Org,
                Dimension::Model,
                Dimension::Endpoint,
                Dimension::Tier,
            ],
        )
        .await
        .unwrap();
    assert_eq!(filtered.len(), 1);
    assert_eq!(
        filtered[0].key,
        vec![
            DimensionValue::Org(o.id),
            DimensionValue::Model(ModelId::new("claude-sonnet-4-5").unwrap()),
            DimensionValue::Endpoint("chat".to_owned()),
            DimensionValue::Tier(None),
        ]
    );
    assert_eq!(filtered[0].totals.requests, 2);
}

pub async fn usage_stream<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    let v = member(&store, o.id).await;
    // More than two pages, with pairs sharing a timestamp (the cursor breaks ties by id).
    let records: Vec<UsageRecord> = (0..1_234i64)
        .map(|i| {
            record(
                o.id,
                if i % 3 == 0 { v.id } else { u.id },
                now() + Duration::seconds(i / 2),
                "0.001",
            )
        })
        .collect();
    store.append(o.id, &records).await.unwrap();
    let mut expected = records.clone();
    expected.sort_by_key(|r| (r.created_at, r.request_id));

    // The stream owns what it needs: it outlives the handle it came from.
    let handle = store.clone();
    let stream = handle.stream(o.id, UsageQuery::default());
    drop(handle);
    let streamed: Vec<UsageRecord> = stream.try_collect().await.unwrap();
    assert_eq!(streamed.len(), expected.len());
    assert!(streamed == expected, "every record once, oldest first");

    let of_v: Vec<RequestId> = store
        .stream(
            o.id,
            UsageQuery {
                user_id: Some(v.id),
                ..UsageQuery::default()
            },
        )
        .map(|r| r.unwrap().request_id)
        .collect()
        .await;
    let expected_v: Vec<RequestId> = expected
        .iter()
        .filter(|r| r.user_id == v.id)
        .map(|r| r.request_id)
        .collect();
    assert_eq!(of_v, expected_v);
    // The sum over the export equals the aggregate.
    let total = store
        .aggregate(o.id, &UsageQuery::default(), &[])
        .await
        .unwrap();
    assert_eq!(total[0].totals.billed_amount, money("1.234"));
}

pub async fn usage_cross_tenant<S: Store>(store: S) {
    let a = org(&store).await;
    let b = org(&store).await;
    let ua = member(&store, a.id).await;
    let ub = member(&store, b.id).await;
    let ra = record(a.id, ua.id, now(), "5");
    store.append(a.id, std::slice::from_ref(&ra)).await.unwrap();
    assert_not_found(store.get(b.id, ra.request_id).await);
    assert!(
        store
            .query(b.id, &UsageQuery::default(), 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .aggregate(b.id, &UsageQuery::default(), &[Dimension::User])
            .await
            .unwrap()
            .is_empty()
    );
    let streamed: Vec<UsageRecord> = store
        .stream(b.id, UsageQuery::default())
        .try_collect()
        .await
        .unwrap();
    assert!(streamed.is_empty());
    // The same request id in B is B's own record: A's existence is not revealed.
    let mut rb = record(b.id, ub.id, now(), "7");
    rb.request_id = ra.request_id;
    let outcome = store.append(b.id, &[rb.clone()]).await.unwrap();
    assert_eq!((outcome.inserted, outcome.duplicates), (1, 0));
    assert_eq!(store.get(b.id, ra.request_id).await.unwrap(), rb);
    assert_eq!(store.get(a.id, ra.request_id).await.unwrap(), ra);
}

/// The same totals whichever way a store reads them: PostgreSQL answers whole-hour windows
/// grouped by organization or day from its hourly rollup, and several breakdowns with one
/// `GROUPING SETS` query; both must equal the records folded one by one. Duplicates appended
/// again are not counted twice.
pub async fn usage_aggregate_paths_agree<S: Store>(store: S) {
    let o = org(&store).await;
    let u = member(&store, o.id).await;
    let v = member(&store, o.id).await;
    let g = group(&store, o.id, "G").await;
    let start = now() - Duration::hours(30);
    let records: Vec<UsageRecord> = (0..40i64)
        .map(|i| {
            let who = if i % 3 == 0 { v.id } else { u.id };
            let mut r = record(
                o.id,
                who,
                start + Duration::minutes(i * 47),
                &format!("0.{:03}", i + 1),
            );
            r.provider_cost = money(&format!("0.0000{}", i % 7 + 1));
            r.input_tokens = u32::try_from(i).unwrap() * 10;
            if i % 2 == 0 {
                r.group_id = Some(g.id);
            }
            if i % 5 == 0 {
                r.model = ModelId::new("gpt-4o").unwrap();
            }
            r
        })
        .collect();
    store.append(o.id, &records).await.unwrap();
    // The same batch again: all duplicates, nothing counted twice.
    assert_eq!(store.append(o.id, &records).await.unwrap().inserted, 0);

    let fold = |query: &UsageQuery, set: &[Dimension]| {
        let mut groups: std::collections::BTreeMap<Vec<DimensionValue>, UsageTotals> =
            std::collections::BTreeMap::new();
        for r in records.iter().filter(|r| {
            query.from.is_none_or(|f| r.created_at >= f)
                && query.to.is_none_or(|t| r.created_at < t)
        }) {
            let key = set.iter().map(|d| d.value_in(r, chrono_tz::UTC)).collect();
            groups.entry(key).or_default().add(r);
        }
        groups.into_iter().collect::<Vec<_>>()
    };
    let windows = [
        UsageQuery::default(),
        // whole hours: the rollup's
        UsageQuery {
            from: Some(start + Duration::hours(3)),
            to: Some(start + Duration::hours(20)),
            ..UsageQuery::default()
        },
        // not whole hours: the records'
        UsageQuery {
            from: Some(start + Duration::minutes(100)),
            to: Some(start + Duration::hours(20) + Duration::minutes(1)),
            ..UsageQuery::default()
        },
    ];
    let sets = vec![
        vec![],
        vec![Dimension::Day],
        vec![Dimension::Org, Dimension::Day],
        vec![Dimension::User],
        vec![Dimension::Model],
        vec![Dimension::Group],
        vec![Dimension::User, Dimension::Model],
        vec![Dimension::User],
    ];
    for query in &windows {
        let each = store.aggregate_each(o.id, query, &sets).await.unwrap();
        assert_eq!(each.len(), sets.len());
        for (set, answer) in sets.iter().zip(&each) {
            let expected = fold(query, set);
            let single = store.aggregate(o.id, query, set).await.unwrap();
            let as_pairs = |rows: &[stratai_core::usage::AggregateRow]| {
                rows.iter()
                    .map(|r| (r.key.clone(), r.totals.clone()))
                    .collect::<Vec<_>>()
            };
            assert_eq!(as_pairs(&single), expected, "aggregate {set:?} {query:?}");
            assert_eq!(
                as_pairs(answer),
                expected,
                "aggregate_each {set:?} {query:?}"
            );
        }
    }
    // Only this organization's records: another's do not leak into its totals.
    let other = org(&store).await;
    let w = member(&store, other.id).await;
    store
        .append(other.id, &[record(other.id, w.id, start, "9.99")])
        .await
        .unwrap();
    let total = store
        .aggregate(o.id, &UsageQuery::default(), &[])
        .await
        .unwrap();
    assert_eq!(total[0].totals.requests, 40);

    // The platform-wide totals per organization (PostgreSQL: the rollup's whole hours and the
    // records of the partial ones) equal the records folded, for whole-hour windows, windows
    // cut inside hours at either end, and a window inside one hour. Another duplicate append
    // changes nothing.
    assert_eq!(store.append(o.id, &records).await.unwrap().inserted, 0);
    let all: Vec<UsageRecord> = records
        .iter()
        .cloned()
        .chain([record(other.id, w.id, start, "9.99")])
        .collect();
    for (from, to) in [
        (start - Duration::days(1), start + Duration::days(2)),
        (start + Duration::hours(3), start + Duration::hours(20)),
        (
            start + Duration::minutes(100),
            start + Duration::hours(20) + Duration::minutes(1),
        ),
        (start + Duration::minutes(-1), start + Duration::minutes(50)),
        (start + Duration::minutes(5), start + Duration::minutes(40)),
    ] {
        let mut expected: std::collections::BTreeMap<OrgId, UsageTotals> =
            std::collections::BTreeMap::new();
        for r in all
            .iter()
            .filter(|r| r.created_at >= from && r.created_at < to)
        {
            expected.entry(r.org_id).or_default().add(r);
        }
        let answer: Vec<(OrgId, UsageTotals)> = store
            .totals_by_org(from, to)
            .await
            .unwrap()
            .into_iter()
            .filter(|(id, _)| *id == o.id || *id == other.id)
            .collect();
        assert_eq!(
            answer,
            expected.into_iter().collect::<Vec<_>>(),
            "totals_by_org {from} .. {to}"
        );
    }
}
