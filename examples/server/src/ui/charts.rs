//! Bar charts as SVG, computed on the server: each bar's geometry is worked out here in exact
//! decimals and whole pixels, and the template draws `<rect>`s. No script, no plotting
//! library, and the numbers are also shown as a table next to each chart.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive as _;

/// Width of the drawing area, in SVG user units.
pub const WIDTH: u32 = 640;
/// Height of one bar row.
const ROW: u32 = 28;
/// Height of a bar inside its row.
const BAR: u32 = 18;
/// Width kept on the left for the labels.
const LABEL_WIDTH: u32 = 200;
/// Longest label drawn in full; longer ones are cut (the table beside the chart has them whole).
const LABEL_CHARS: usize = 24;
/// Width kept on the right for the values.
const VALUE_WIDTH: u32 = 110;

/// One bar: a label, the value it stands for, and its drawn geometry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bar {
    /// What the bar is (a day, a person, a model).
    pub label: String,
    /// The value shown at the bar's end (already formatted, e.g. `$1.25`).
    pub value: String,
    /// Top of the bar.
    pub y: u32,
    /// Baseline of the row's text.
    pub text_y: u32,
    /// Width of the bar (0 for a zero value).
    pub width: u32,
}

/// A horizontal bar chart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BarChart {
    /// Accessible name of the chart (`<title>` of the SVG).
    pub title: String,
    /// The bars, in the given order.
    pub bars: Vec<Bar>,
    /// Total height of the drawing.
    pub height: u32,
    /// Width of the drawing.
    pub width: u32,
    /// Where bars start.
    pub bar_x: u32,
    /// Where value labels start... at the right end of the longest possible bar.
    pub value_x: u32,
    /// Height of a bar.
    pub bar_height: u32,
}

impl BarChart {
    /// A chart of `rows` (`(label, value, shown value)`); the largest value spans the full
    /// bar width, the others in proportion, rounded to whole units. Negative values (none
    /// in practice: costs are never negative) draw as zero.
    #[must_use]
    pub fn new(title: impl Into<String>, rows: &[(String, Decimal, String)]) -> Self {
        let max = rows
            .iter()
            .map(|(_, v, _)| *v)
            .max()
            .unwrap_or(Decimal::ZERO);
        let span = WIDTH - LABEL_WIDTH - VALUE_WIDTH;
        let bars = rows
            .iter()
            .zip(0u32..)
            .map(|((label, value, shown), i)| Bar {
                label: short(label),
                value: shown.clone(),
                y: i * ROW + (ROW - BAR) / 2,
                text_y: i * ROW + ROW / 2 + 5,
                width: scaled(*value, max, span),
            })
            .collect();
        let count = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        Self {
            title: title.into(),
            bars,
            height: count.saturating_mul(ROW).max(ROW),
            width: WIDTH,
            bar_x: LABEL_WIDTH,
            value_x: LABEL_WIDTH + span + 8,
            bar_height: BAR,
        }
    }

    /// Whether there is nothing to draw.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.bars.is_empty()
    }
}

/// `label`, cut to [`LABEL_CHARS`] characters with an ellipsis.
fn short(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        return label.to_owned();
    }
    let mut cut: String = label.chars().take(LABEL_CHARS - 1).collect();
    cut.push('…');
    cut
}

/// `value / max * span`, rounded, in `0..=span`; a positive value never draws invisible.
fn scaled(value: Decimal, max: Decimal, span: u32) -> u32 {
    if max <= Decimal::ZERO || value <= Decimal::ZERO {
        return 0;
    }
    let width = (value * Decimal::from(span) / max).round();
    width.to_u32().unwrap_or(span).clamp(1, span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal_macros::dec;

    fn row(label: &str, v: Decimal) -> (String, Decimal, String) {
        (label.to_owned(), v, format!("${v}"))
    }

    #[test]
    fn the_largest_value_spans_the_bar_area_and_others_are_in_proportion() {
        let chart = BarChart::new(
            "spend",
            &[row("a", dec!(2)), row("b", dec!(1)), row("c", dec!(0))],
        );
        let span = WIDTH - LABEL_WIDTH - VALUE_WIDTH;
        let widths: Vec<u32> = chart.bars.iter().map(|b| b.width).collect();
        assert_eq!(widths, vec![span, span / 2, 0]);
        assert_eq!(chart.height, 3 * ROW);
        assert_eq!(chart.bars[1].y, ROW + (ROW - BAR) / 2);
        assert_eq!(chart.bars[0].value, "$2");
    }

    #[test]
    fn tiny_values_stay_visible_and_empty_charts_have_a_row() {
        let chart = BarChart::new(
            "spend",
            &[row("big", dec!(1000)), row("tiny", dec!(0.0001))],
        );
        assert_eq!(chart.bars[1].width, 1);
        let long = BarChart::new(
            "spend",
            &[row("someone-with-a-long-name@example.test", dec!(1))],
        );
        assert_eq!(long.bars[0].label, "someone-with-a-long-nam…");
        let empty = BarChart::new("spend", &[]);
        assert!(empty.is_empty());
        assert_eq!(empty.height, ROW);
    }
}
