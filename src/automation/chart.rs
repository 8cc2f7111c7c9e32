//! The status page's pictures: small time-series charts drawn as inline SVG, so the page needs
//! no script, no file from elsewhere and no charting crate, and renders the same in any
//! browser (and in a mail client, should the page ever be mailed). Each chart has a title
//! with its unit, a y axis from 0 with up to six round ticks in a unit chosen for the
//! values (KiB ... TiB, s ... d), dates along the x axis, and its last value written beside
//! the last point, which is what an operator reads first.

use std::fmt::Write as _;

use chrono::{DateTime, Local, Utc};

use super::status::esc;

/// What the values measure; picks the axis's unit and how values are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Seconds,
}

/// How the points are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// One bar per point: quantities per run (bytes added, duration).
    Bars,
    /// A line through the points: a level over time (repository size, lag).
    Line,
}

/// One chart.
#[derive(Clone, Debug)]
pub struct Chart<'a> {
    /// Names the chart in the page (`data-chart`), for tests and user style sheets.
    pub id: &'a str,
    pub title: &'a str,
    pub unit: Unit,
    pub style: Style,
    /// (time, value), in any order; values below 0 are drawn at 0.
    pub points: Vec<(DateTime<Utc>, f64)>,
    /// The span of the x axis.
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// A level worth seeing (an alert threshold): a dashed line, labelled.
    pub threshold: Option<f64>,
}

const W: f64 = 440.0;
const H: f64 = 150.0;
const LEFT: f64 = 58.0;
const RIGHT: f64 = 78.0;
const TOP: f64 = 24.0;
const BOTTOM: f64 = 22.0;

/// The unit an axis whose top value is `max` is labelled in: (divisor, name).
fn scale(unit: Unit, max: f64) -> (f64, &'static str) {
    match unit {
        Unit::Bytes => {
            let names = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
            let mut k = 0;
            while k + 1 < names.len() && max >= 1024f64.powi(k as i32 + 1) {
                k += 1;
            }
            (1024f64.powi(k as i32), names[k])
        }
        Unit::Seconds => match max {
            m if m < 120.0 => (1.0, "s"),
            m if m < 2.0 * 3600.0 => (60.0, "min"),
            m if m < 2.0 * 86400.0 => (3600.0, "h"),
            _ => (86400.0, "d"),
        },
    }
}

/// A round step (1, 2 or 5 times a power of ten) that splits `span` into at most five.
fn nice_step(span: f64) -> f64 {
    if span <= 0.0 || !span.is_finite() {
        return 1.0;
    }
    let raw = span / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .find(|s| span / s <= 5.0 + 1e-9)
        .unwrap_or(10.0 * mag)
}

/// A number without trailing zeros: 2, 2.5, 0.25.
fn number(v: f64) -> String {
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// A value for people, in the unit that suits it: "24.0 MiB", "3.2 s", "1h 12m".
pub fn value_text(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Bytes => indicatif::HumanBytes(v.max(0.0) as u64).to_string(),
        Unit::Seconds if v < 60.0 => format!("{} s", number((v * 10.0).round() / 10.0)),
        Unit::Seconds => super::status::age_text(v.round() as i64),
    }
}

/// At most `n` points, one per equal slice of `[from, to]`: the largest of each slice (a
/// spike of lag or a big run stays visible), or with `last` the slice's last one (a level).
pub fn thin(
    points: &[(DateTime<Utc>, f64)],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    n: usize,
    last: bool,
) -> Vec<(DateTime<Utc>, f64)> {
    if points.len() <= n || n == 0 {
        return points.to_vec();
    }
    let span = (to - from).num_milliseconds().max(1) as f64;
    let mut slices: Vec<Option<(DateTime<Utc>, f64)>> = vec![None; n];
    for &(t, v) in points {
        let at = ((t - from).num_milliseconds() as f64 / span * n as f64).floor();
        let i = (at.max(0.0) as usize).min(n - 1);
        slices[i] = match slices[i] {
            None => Some((t, v)),
            Some((t0, v0)) if last => Some(if t >= t0 { (t, v) } else { (t0, v0) }),
            Some((t0, v0)) => Some(if v > v0 { (t, v) } else { (t0, v0) }),
        };
    }
    slices.into_iter().flatten().collect()
}

/// The chart as an `<svg>` element.
pub fn svg(c: &Chart<'_>) -> String {
    let mut points: Vec<(DateTime<Utc>, f64)> = c
        .points
        .iter()
        .filter(|(t, v)| v.is_finite() && *t >= c.from && *t <= c.to)
        .map(|&(t, v)| (t, v.max(0.0)))
        .collect();
    points.sort_by_key(|p| p.0);
    let (pw, ph) = (W - LEFT - RIGHT, H - TOP - BOTTOM);
    let max = points
        .iter()
        .map(|p| p.1)
        .chain(c.threshold)
        .fold(0.0, f64::max);
    let (div, unit_name) = scale(c.unit, max);
    let step = nice_step(max / div);
    let top = ((max / div / step).ceil() * step).max(step);
    let span = (c.to - c.from).num_milliseconds().max(1) as f64;
    let x = |t: DateTime<Utc>| LEFT + (t - c.from).num_milliseconds() as f64 / span * pw;
    let y = |v: f64| TOP + ph - (v / div / top) * ph;

    let mut s = format!(
        "<svg class=\"chart\" data-chart=\"{id}\" xmlns=\"http://www.w3.org/2000/svg\" \
         viewBox=\"0 0 {W} {H}\" width=\"{W}\" height=\"{H}\" role=\"img\" aria-label=\"{title}\">\
         <title>{title}</title><text class=\"title\" x=\"{LEFT}\" y=\"14\">{title} ({unit_name})</text>",
        id = esc(c.id),
        title = esc(c.title),
    );
    // The y axis: gridlines and labels at round values.
    let mut v = 0.0;
    while v <= top + step * 1e-6 {
        let gy = TOP + ph - v / top * ph;
        let _ = write!(
            s,
            "<path class=\"grid\" d=\"M{LEFT} {gy:.1}H{:.1}\"/>\
             <text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{} {unit_name}</text>",
            LEFT + pw,
            LEFT - 4.0,
            gy + 3.5,
            number(v)
        );
        v += step;
    }
    // The x axis: five dates over the span.
    for i in 0..5 {
        let t = c.from + (c.to - c.from) * i / 4;
        let anchor = match i {
            0 => "start",
            4 => "end",
            _ => "middle",
        };
        let _ = write!(
            s,
            "<text class=\"tick\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"{anchor}\">{}</text>",
            x(t),
            H - 6.0,
            t.with_timezone(&Local).format("%b %d")
        );
    }
    let _ = write!(
        s,
        "<path class=\"axis\" d=\"M{LEFT} {TOP}V{:.1}H{:.1}\"/>",
        TOP + ph,
        LEFT + pw
    );
    if let Some(th) = c.threshold {
        let _ = write!(
            s,
            "<path class=\"threshold\" d=\"M{LEFT} {ty:.1}H{:.1}\"/>\
             <text class=\"threshold-label\" x=\"{:.1}\" y=\"{:.1}\">alert {}</text>",
            LEFT + pw,
            LEFT + pw + 4.0,
            y(th) + 3.5,
            esc(&value_text(c.unit, th)),
            ty = y(th),
        );
    }
    let Some(&(last_t, last_v)) = points.last() else {
        let _ = write!(
            s,
            "<text class=\"empty\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">no data in this period</text></svg>",
            LEFT + pw / 2.0,
            TOP + ph / 2.0
        );
        return s;
    };
    let mut d = String::new();
    match c.style {
        Style::Bars => {
            for &(t, v) in &points {
                let _ = write!(
                    d,
                    "M{:.1} {:.1}V{:.1}",
                    x(t),
                    TOP + ph,
                    y(v).min(TOP + ph - 1.0)
                );
            }
        }
        Style::Line => {
            for (i, &(t, v)) in points.iter().enumerate() {
                let _ = write!(
                    d,
                    "{}{:.1} {:.1}",
                    if i == 0 { "M" } else { "L" },
                    x(t),
                    y(v)
                );
            }
        }
    }
    let class = match c.style {
        Style::Bars => "series bars",
        Style::Line => "series line",
    };
    let (lx, ly) = (x(last_t), y(last_v));
    let _ = write!(
        s,
        "<path class=\"{class}\" d=\"{d}\"/><circle class=\"last-point\" cx=\"{lx:.1}\" cy=\"{ly:.1}\" r=\"2.5\"/>\
         <text class=\"last\" x=\"{:.1}\" y=\"{:.1}\">{}</text></svg>",
        LEFT + pw + 4.0,
        ly.clamp(TOP + 4.0, TOP + ph) + 3.5,
        esc(&value_text(c.unit, last_v))
    );
    s
}

/// The style sheet the charts need, for the page's `<style>`.
pub const CSS: &str = ".chart{margin:4px 12px 4px 0;background:#fff}\
    .chart text{font:10px system-ui,sans-serif;fill:#57606a}\
    .chart .title{font-weight:600;fill:#24292f}\
    .chart .grid{stroke:#eaeef2;stroke-width:1}.chart .axis{stroke:#8c959f;fill:none}\
    .chart .series{fill:none;stroke:#0969da}.chart .line{stroke-width:1.5}\
    .chart .bars{stroke-width:3}.chart .last-point{fill:#0969da}\
    .chart .last{fill:#0969da;font-weight:600}\
    .chart .threshold{stroke:#cf222e;stroke-dasharray:4 3;fill:none}\
    .chart .threshold-label{fill:#cf222e}";

#[cfg(test)]
mod tests {
    use super::*;

    fn chart(points: Vec<(DateTime<Utc>, f64)>, unit: Unit, style: Style) -> String {
        let to = Utc::now();
        svg(&Chart {
            id: "test",
            title: "bytes <added>",
            unit,
            style,
            points,
            from: to - chrono::Duration::days(30),
            to,
            threshold: None,
        })
    }

    #[test]
    fn axes_carry_units_and_the_last_value_is_written() {
        let now = Utc::now();
        let pts = vec![
            (now - chrono::Duration::days(3), 10.0 * 1024.0 * 1024.0),
            (now - chrono::Duration::days(1), 24.0 * 1024.0 * 1024.0),
        ];
        let s = chart(pts, Unit::Bytes, Style::Bars);
        assert!(
            s.starts_with("<svg class=\"chart\" data-chart=\"test\""),
            "{s}"
        );
        assert!(s.contains("bytes &lt;added&gt; (MiB)"), "{s}");
        assert!(s.contains(">0 MiB<") && s.contains(">25 MiB<"), "{s}");
        assert!(s.contains("<text class=\"last\""), "{s}");
        assert!(s.contains(">24.00 MiB</text>"), "{s}");
        assert_eq!(s.matches("class=\"series bars\"").count(), 1);
        let d = s.split("class=\"series bars\" d=\"").nth(1).unwrap();
        assert_eq!(d.split('"').next().unwrap().matches('M').count(), 2);
        assert!(s.ends_with("</svg>"));
    }

    #[test]
    fn a_line_and_an_empty_chart() {
        let now = Utc::now();
        let pts: Vec<_> = (0..10)
            .map(|i| (now - chrono::Duration::hours(i), 30.0 * i as f64))
            .collect();
        let s = chart(pts, Unit::Seconds, Style::Line);
        let d = s.split("class=\"series line\" d=\"").nth(1).unwrap();
        let d = d.split('"').next().unwrap();
        assert!(d.starts_with('M') && d.matches('L').count() == 9, "{d}");
        // 270 s at most: minutes on the axis; the last (newest) value is 0.
        assert!(
            s.contains("(min)") && s.contains(">0 s</text></svg>"),
            "{s}"
        );
        let empty = chart(Vec::new(), Unit::Seconds, Style::Line);
        assert!(
            empty.contains("no data") && !empty.contains("series"),
            "{empty}"
        );
    }

    #[test]
    fn round_ticks_and_units() {
        assert_eq!(nice_step(24.0), 5.0);
        assert_eq!(nice_step(7.0), 2.0);
        assert!((nice_step(0.9) - 0.2).abs() < 1e-12);
        assert_eq!(scale(Unit::Bytes, 3.0 * 1024.0 * 1024.0 * 1024.0).1, "GiB");
        assert_eq!(scale(Unit::Seconds, 5000.0).1, "min");
        assert_eq!(scale(Unit::Seconds, 10000.0).1, "h");
        assert_eq!(number(2.50), "2.5");
        assert_eq!(number(20.0), "20");
    }

    #[test]
    fn thinning_keeps_peaks_or_levels() {
        let to = Utc::now();
        let from = to - chrono::Duration::days(1);
        let pts: Vec<_> = (0..1000)
            .map(|i| {
                (
                    from + chrono::Duration::milliseconds(i * 86_400),
                    (i % 7) as f64,
                )
            })
            .collect();
        let peaks = thin(&pts, from, to, 100, false);
        assert!(
            peaks.len() <= 100 && peaks.iter().all(|p| p.1 == 6.0),
            "{peaks:?}"
        );
        let levels = thin(&pts, from, to, 100, true);
        assert_eq!(levels.last(), pts.last());
    }
}
