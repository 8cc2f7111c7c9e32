//! Durations as people read them, one spelling everywhere sbk prints one: `42s`, `5m`,
//! `3h 12m`, `2d 4h` (two units at most; `humantime`'s `1day 2h 3m 4s` reads as a typo).

use std::time::Duration;

/// `d` rounded down to its two largest units.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    let (days, h, m, sec) = (s / 86400, (s % 86400) / 3600, (s % 3600) / 60, s % 60);
    let two = |a: u64, ua: &str, b: u64, ub: &str| match b {
        0 => format!("{a}{ua}"),
        _ => format!("{a}{ua} {b}{ub}"),
    };
    match (days, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => two(m, "m", sec, "s"),
        (0, _, _) => two(h, "h", m, "m"),
        _ => two(days, "d", h, "h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_units_at_most() {
        let cases = [
            (0, "0s"),
            (42, "42s"),
            (60, "1m"),
            (61, "1m 1s"),
            (3600, "1h"),
            (3600 * 3 + 12 * 60 + 5, "3h 12m"),
            (86400, "1d"),
            (86400 * 2 + 4 * 3600 + 59, "2d 4h"),
        ];
        for (secs, want) in cases {
            assert_eq!(duration(Duration::from_secs(secs)), want, "{secs}");
        }
    }
}
