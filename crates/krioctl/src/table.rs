//! Table output in crictl's layout, and the humanized values it shows.

use std::time::Duration;

/// How many characters of an ID a table shows unless `--no-trunc` (crictl's 13).
pub const TRUNC_ID_LEN: usize = 13;

/// A text table laid out like Go's `tabwriter` as crictl configures it
/// (minimum cell width 20, padding 3, space padding): every column but the
/// last is padded to `max(20, widest cell + 3)` characters; the last column
/// is not padded.
#[derive(Debug, Clone, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

const MIN_WIDTH: usize = 20;
const PADDING: usize = 3;

impl Table {
    /// A table whose first row is `headers`.
    pub fn new(headers: &[&str]) -> Self {
        Table {
            rows: vec![headers.iter().map(|h| h.to_string()).collect()],
        }
    }

    /// Appends a row (cells beyond the header count are kept; missing cells are empty).
    pub fn add_row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Renders the table, one `\n`-terminated line per row.
    pub fn render(&self) -> String {
        let ncols = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let mut widths = vec![0usize; ncols];
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
        let mut out = String::new();
        for row in &self.rows {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                line.push_str(cell);
                if i + 1 < row.len() {
                    let width = (widths[i] + PADDING).max(MIN_WIDTH);
                    let pad = width.saturating_sub(cell.chars().count());
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

/// Shortens an ID for tables: strips a `sha256:` prefix and keeps the first
/// [`TRUNC_ID_LEN`] characters, unless `no_trunc`.
pub fn trunc_id(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        return id.to_string();
    }
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    id.chars().take(TRUNC_ID_LEN).collect()
}

/// Describes a duration the way Docker's `go-units` `HumanDuration` does
/// ("Less than a second", "5 seconds", "About a minute", "3 hours", "2 weeks", ...).
pub fn human_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs < 1 {
        return "Less than a second".into();
    }
    if secs == 1 {
        return "1 second".into();
    }
    if secs < 60 {
        return format!("{secs} seconds");
    }
    let minutes = secs / 60;
    if minutes == 1 {
        return "About a minute".into();
    }
    if minutes < 60 {
        return format!("{minutes} minutes");
    }
    let hours = (d.as_secs_f64() / 3600.0).round() as u64;
    if hours == 1 {
        return "About an hour".into();
    }
    if hours < 48 {
        return format!("{hours} hours");
    }
    if hours < 24 * 7 * 2 {
        return format!("{} days", hours / 24);
    }
    if hours < 24 * 30 * 2 {
        return format!("{} weeks", hours / 24 / 7);
    }
    if hours < 24 * 365 * 2 {
        return format!("{} months", hours / 24 / 30);
    }
    format!("{} years", (d.as_secs_f64() / 3600.0 / 24.0 / 365.0) as u64)
}

/// "N units ago" for a CRI timestamp (`created_at`, nanoseconds since the
/// epoch) relative to `now_ns` (also nanoseconds since the epoch).
pub fn ago(created_at_ns: i64, now_ns: i64) -> String {
    let delta = now_ns.saturating_sub(created_at_ns).max(0);
    format!(
        "{} ago",
        human_duration(Duration::from_nanos(u64::try_from(delta).unwrap_or(0)))
    )
}

/// Formats `v` like Go's `%.{prec}g`: `prec` significant digits, trailing
/// zeros removed, exponent form (`1e+03`) when the exponent is `< -4` or `>= prec`.
fn format_g(v: f64, prec: usize) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let prec = prec.max(1);
    let sci = format!("{:.*e}", prec - 1, v);
    let (mant, exp) = match sci.split_once('e') {
        Some((m, e)) => (m.to_string(), e.parse::<i32>().unwrap_or(0)),
        None => (sci.clone(), 0),
    };
    let trim = |s: &str| -> String {
        if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_string()
        } else {
            s.to_string()
        }
    };
    if exp < -4 || exp >= prec as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim(&mant), exp.abs())
    } else {
        let decimals = usize::try_from(prec as i32 - 1 - exp).unwrap_or(0);
        trim(&format!("{v:.decimals$}"))
    }
}

/// A byte count in decimal units with 3 significant digits, as crictl's image
/// table shows it (`go-units` `HumanSizeWithPrecision(size, 3)`): `1.24MB`, `512B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= 1000.0 && i < UNITS.len() - 1 {
        size /= 1000.0;
        i += 1;
    }
    format!("{}{}", format_g(size, 3), UNITS[i])
}

/// crictl's name for a `ContainerState` value: `Created`, `Running`, `Exited`, `Unknown`.
pub fn container_state_name(state: i32) -> &'static str {
    match state {
        0 => "Created",
        1 => "Running",
        2 => "Exited",
        _ => "Unknown",
    }
}

/// crictl's name for a `PodSandboxState` value: `Ready` or `NotReady`.
pub fn pod_state_name(state: i32) -> &'static str {
    match state {
        0 => "Ready",
        _ => "NotReady",
    }
}

/// Splits an image reference `repo[:tag]` into (repo, tag); the tag is the
/// part after the last `:` that follows the last `/` (so registry ports stay
/// in the repo). A reference without a tag gets `<none>`.
pub fn split_repo_tag(reference: &str) -> (String, String) {
    let slash = reference.rfind('/').map(|i| i + 1).unwrap_or(0);
    match reference[slash..].rfind(':') {
        Some(i) => (
            reference[..slash + i].to_string(),
            reference[slash + i + 1..].to_string(),
        ),
        None => (reference.to_string(), "<none>".to_string()),
    }
}

/// Splits a digested reference `repo@sha256:...` into (repo, digest).
pub fn split_repo_digest(reference: &str) -> (String, String) {
    match reference.split_once('@') {
        Some((r, d)) => (r.to_string(), d.to_string()),
        None => (reference.to_string(), "<none>".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_layout_matches_tabwriter() {
        let mut t = Table::new(&["POD ID", "CREATED", "STATE", "NAME"]);
        t.add_row(vec![
            "0123456789abc".into(),
            "5 seconds ago".into(),
            "Ready".into(),
            "a-pod-name-that-is-long-ish".into(),
        ]);
        let out = t.render();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            format!("{:<20}{:<20}{:<20}{}", "POD ID", "CREATED", "STATE", "NAME")
        );
        assert_eq!(
            lines[1],
            format!(
                "{:<20}{:<20}{:<20}{}",
                "0123456789abc", "5 seconds ago", "Ready", "a-pod-name-that-is-long-ish"
            )
        );
        // A wide cell widens its column to width + 3.
        let mut t = Table::new(&["A", "B"]);
        t.add_row(vec!["x".repeat(25), "y".into()]);
        let out = t.render();
        assert_eq!(
            out.lines().nth(1).unwrap(),
            format!("{}   y", "x".repeat(25))
        );
        assert_eq!(out.lines().next().unwrap(), format!("{:<28}B", "A"));
    }

    #[test]
    fn durations_like_go_units() {
        let s = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(s(1)), "1 second");
        assert_eq!(human_duration(s(45)), "45 seconds");
        assert_eq!(human_duration(s(90)), "About a minute");
        assert_eq!(human_duration(s(600)), "10 minutes");
        assert_eq!(human_duration(s(3600)), "About an hour");
        assert_eq!(human_duration(s(5 * 3600)), "5 hours");
        assert_eq!(human_duration(s(3 * 86400)), "3 days");
        assert_eq!(human_duration(s(21 * 86400)), "3 weeks");
        assert_eq!(human_duration(s(90 * 86400)), "3 months");
        assert_eq!(human_duration(s(3 * 365 * 86400)), "3 years");
        assert_eq!(ago(0, 5_000_000_000), "5 seconds ago");
        assert_eq!(ago(10, 0), "Less than a second ago");
    }

    #[test]
    fn sizes_like_go_units() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(512), "512B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1_240_000), "1.24MB");
        assert_eq!(human_size(2_000_000), "2MB");
        assert_eq!(human_size(1_500_000), "1.5MB");
        assert_eq!(human_size(77_812_345), "77.8MB");
        assert_eq!(human_size(123_456_789_012), "123GB");
        assert_eq!(human_size(999_999), "1e+03kB");
    }

    #[test]
    fn ids_and_refs() {
        assert_eq!(trunc_id("sha256:0123456789abcdef", false), "0123456789abc");
        assert_eq!(trunc_id("0123456789abcdef", false), "0123456789abc");
        assert_eq!(
            trunc_id("sha256:0123456789abcdef", true),
            "sha256:0123456789abcdef"
        );
        assert_eq!(trunc_id("short", false), "short");
        assert_eq!(
            split_repo_tag("docker.io/library/busybox:1.36"),
            ("docker.io/library/busybox".into(), "1.36".into())
        );
        assert_eq!(
            split_repo_tag("localhost:5000/busybox"),
            ("localhost:5000/busybox".into(), "<none>".into())
        );
        assert_eq!(
            split_repo_digest("localhost:5000/busybox@sha256:abc"),
            ("localhost:5000/busybox".into(), "sha256:abc".into())
        );
        assert_eq!(container_state_name(1), "Running");
        assert_eq!(container_state_name(7), "Unknown");
        assert_eq!(pod_state_name(0), "Ready");
        assert_eq!(pod_state_name(1), "NotReady");
    }
}
