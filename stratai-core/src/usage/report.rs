//! The usage report of the admin API, pure: its `group_by` list parsed, totals regrouped by
//! an organization's local days, the answer's shape, and one CSV line of the export (core's
//! column order and formatting). The store side, reading and streaming the records, is
//! `stratai_store::admin::usage`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use super::{
    AggregateRow, Dimension, DimensionValue, ExportError, UsageQuery, UsageRecord, UsageTotals,
};
use crate::error::ValidationError;
use crate::ids::OrgId;

/// Parses a comma-separated dimension list (`org,day`): blanks skipped, repeats kept once,
/// an unknown name refused as `group_by[i]`.
pub fn parse_dimensions(text: Option<&str>) -> Result<Vec<Dimension>, ValidationError> {
    let mut out = Vec::new();
    for (i, name) in text
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
    {
        let d: Dimension = serde_json::from_value(serde_json::Value::String(name.to_owned()))
            .map_err(|_| {
                ValidationError::new(
                    format!("group_by[{i}]"),
                    format!("unknown dimension `{name}`"),
                )
            })?;
        if !out.contains(&d) {
            out.push(d);
        }
    }
    Ok(out)
}

/// Refuses a period whose end is not after its start (`to`).
pub fn check_period(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<(), ValidationError> {
    match (from, to) {
        (Some(from), Some(to)) if from >= to => {
            Err(ValidationError::new("to", "must be after `from`"))
        }
        _ => Ok(()),
    }
}

/// Totals grouped by dimensions whose days are a timezone's local days, folded one record at
/// a time (the stores group days in UTC, so these are regrouped from the streamed records).
#[derive(Debug)]
pub struct LocalDayGroups<'a> {
    group_by: &'a [Dimension],
    tz: Tz,
    groups: BTreeMap<Vec<DimensionValue>, UsageTotals>,
}

impl<'a> LocalDayGroups<'a> {
    /// No records yet, grouping by `group_by` with days local to `tz`.
    #[must_use]
    pub fn new(group_by: &'a [Dimension], tz: Tz) -> Self {
        Self {
            group_by,
            tz,
            groups: BTreeMap::new(),
        }
    }

    /// Adds one record to its group.
    pub fn add(&mut self, r: &UsageRecord) {
        let key = self
            .group_by
            .iter()
            .map(|d| d.value_in(r, self.tz))
            .collect();
        self.groups.entry(key).or_default().add(r);
    }

    /// The rows, by key.
    #[must_use]
    pub fn into_rows(self) -> Vec<AggregateRow> {
        self.groups
            .into_iter()
            .map(|(key, totals)| AggregateRow { key, totals })
            .collect()
    }
}

/// Answer of `GET /api/usage`.
#[derive(Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UsageSummary {
    /// Organization.
    pub org_id: OrgId,
    /// The filter applied.
    pub query: UsageQuery,
    /// Dimensions grouped by.
    pub group_by: Vec<Dimension>,
    /// The timezone of the `day` dimension: the organization's.
    pub timezone: String,
    /// One row per group.
    pub rows: Vec<AggregateRow>,
    /// Totals over all rows.
    pub totals: UsageTotals,
}

/// One CSV line of `fields` (core's quoting, `\n` ended), for an export streamed line by line.
pub fn csv_line<I, T>(fields: I) -> Result<Vec<u8>, ExportError>
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let mut w = csv::WriterBuilder::new()
        .has_headers(false)
        .from_writer(Vec::with_capacity(256));
    w.write_record(fields)?;
    w.into_inner().map_err(|e| ExportError::Io(e.into_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimensions_parse_once_each_and_unknown_ones_are_named() {
        assert_eq!(
            parse_dimensions(Some(" day, model,day,,")).unwrap(),
            [Dimension::Day, Dimension::Model]
        );
        assert!(parse_dimensions(None).unwrap().is_empty());
        let e = parse_dimensions(Some("org,week")).unwrap_err();
        assert_eq!(e.field, "group_by[1]");
        assert_eq!(e.reason, "unknown dimension `week`");
    }

    #[test]
    fn a_period_ends_after_it_starts() {
        let t = Utc::now();
        assert!(check_period(Some(t), None).is_ok());
        assert_eq!(check_period(Some(t), Some(t)).unwrap_err().field, "to");
    }

    #[test]
    fn a_csv_line_quotes_like_the_export() {
        assert_eq!(
            csv_line(["a", "b,c", "d\"e"]).unwrap(),
            b"a,\"b,c\",\"d\"\"e\"\n"
        );
    }
}
