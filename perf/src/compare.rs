//! Compares a benchmark's JSON report with a saved one: every measurement the two share, as current / baseline.

use serde_json::{Map, Value};
use std::path::Path;

/// Keys that are not measurements: run settings, and raw per-round samples (noise). Whatever is under them is
/// skipped too.
const NOT_MEASUREMENTS: [&str; 7] = ["seconds", "round", "rounds", "round_ms", "options", "samples", "per_round"];

/// One measurement found in both reports.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Where it is, e.g. `results[setup=vpngw esp,size=1400].received_pps`.
    pub path: String,
    pub baseline: f64,
    pub current: f64,
    /// current / baseline.
    pub ratio: f64,
}

/// Reads a saved report.
pub fn load(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{} is not a JSON report: {e}", path.display()))
}

/// Whether the two reports come from the same benchmark (their `"bench"` fields).
pub fn check_same_bench(baseline: &Value, current: &Value) -> Result<(), String> {
    let (baseline, current) = (baseline.get("bench"), current.get("bench"));
    if baseline == current {
        return Ok(());
    }
    let name = |bench: Option<&Value>| bench.map_or("unnamed".to_string(), Value::to_string);
    let article = if baseline.is_some() { "a" } else { "an" };
    Err(format!("baseline is {article} {} report, this run is {}", name(baseline), name(current)))
}

/// Every numeric leaf in `current` that also exists in `baseline`, with current / baseline.
///
/// Objects are matched by key. Array elements (result rows) are matched by their identity: their string, bool
/// and integer fields, e.g. `setup=vpngw esp,size=1400`; by index when some row has no such field or two rows
/// share one. Inside a row, integers are identity and only floats are compared; outside rows, integers are
/// compared too. Measurements whose baseline is 0 are left out.
pub fn compare(baseline: &Value, current: &Value) -> Vec<Change> {
    let mut changes = Vec::new();
    walk("", baseline, current, false, &mut changes);
    changes
}

fn walk(path: &str, baseline: &Value, current: &Value, in_row: bool, changes: &mut Vec<Change>) {
    match (baseline, current) {
        (Value::Object(baseline), Value::Object(current)) => {
            for (key, current) in current {
                if NOT_MEASUREMENTS.contains(&key.as_str()) {
                    continue;
                }
                if let Some(baseline) = baseline.get(key) {
                    let path = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    walk(&path, baseline, current, in_row, changes);
                }
            }
        }
        (Value::Array(baseline), Value::Array(current)) => {
            for (label, baseline, current) in pair_rows(baseline, current) {
                walk(&format!("{path}[{label}]"), baseline, current, true, changes);
            }
        }
        (Value::Number(baseline), Value::Number(current)) => {
            if in_row && !baseline.is_f64() && !current.is_f64() {
                return;
            }
            let (Some(baseline), Some(current)) = (baseline.as_f64(), current.as_f64()) else { return };
            if baseline == 0.0 || !baseline.is_finite() || !current.is_finite() {
                return;
            }
            changes.push(Change { path: path.to_string(), baseline, current, ratio: current / baseline });
        }
        _ => {}
    }
}

/// Pairs two arrays' elements, each with the label its path shows: by identity when every element on both
/// sides has a unique one, else by index.
fn pair_rows<'a>(baseline: &'a [Value], current: &'a [Value]) -> Vec<(String, &'a Value, &'a Value)> {
    if let (Some(baseline_ids), Some(current_ids)) = (identities(baseline), identities(current)) {
        return current_ids
            .into_iter()
            .zip(current)
            .filter_map(|(id, row)| {
                let found = baseline_ids.iter().position(|b| *b == id)?;
                Some((id, &baseline[found], row))
            })
            .collect();
    }
    baseline.iter().zip(current).enumerate().map(|(i, (b, c))| (i.to_string(), b, c)).collect()
}

/// Each row's identity, or None when a row has none or two rows share one.
fn identities(rows: &[Value]) -> Option<Vec<String>> {
    let mut ids = Vec::new();
    for row in rows {
        let id = identity(row.as_object()?)?;
        if ids.contains(&id) {
            return None;
        }
        ids.push(id);
    }
    Some(ids)
}

/// `setup=vpngw esp,size=1400`: a row's string, bool and integer fields.
fn identity(row: &Map<String, Value>) -> Option<String> {
    let fields: Vec<String> = row
        .iter()
        .filter_map(|(key, value)| {
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Bool(b) => b.to_string(),
                Value::Number(n) if !n.is_f64() => n.to_string(),
                _ => return None,
            };
            Some(format!("{key}={text}"))
        })
        .collect();
    (!fields.is_empty()).then(|| fields.join(","))
}

/// Prints the changes whose ratio moved by more than `threshold` (0.05: 5%), biggest move first, and how many
/// did not.
pub fn print(changes: &[Change], threshold: f64) {
    print!("{}", table(changes, threshold));
}

fn table(changes: &[Change], threshold: f64) -> String {
    if changes.is_empty() {
        return "no numbers in common\n".to_string();
    }
    let mut moved: Vec<&Change> = changes.iter().filter(|c| (c.ratio - 1.0).abs() > threshold).collect();
    moved.sort_by(|a, b| distance(b.ratio).total_cmp(&distance(a.ratio)));

    let mut out = String::new();
    if !moved.is_empty() {
        let rows: Vec<[String; 5]> = moved
            .iter()
            .map(|c| {
                let percent = format!("{:+.1}%", (c.ratio - 1.0) * 100.0);
                [c.path.clone(), number(c.baseline), number(c.current), format!("{:.3}", c.ratio), percent]
            })
            .collect();
        let header = ["measurement", "baseline", "current", "ratio", "change"].map(String::from);
        let widths: Vec<usize> =
            (0..5).map(|i| rows.iter().chain([&header]).map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
        for row in [&header].into_iter().chain(&rows) {
            let mut line = format!("{:<w$}", row[0], w = widths[0]);
            for (cell, width) in row.iter().zip(&widths).skip(1) {
                line += &format!("  {cell:>width$}");
            }
            out += &format!("{line}\n");
        }
    }
    let unchanged = changes.len() - moved.len();
    out += &format!("{unchanged} of {} unchanged (within {:.1}%)\n", changes.len(), threshold * 100.0);
    out
}

/// How far a ratio is from 1, as a factor: halving counts as much as doubling, and a change of sign most.
fn distance(ratio: f64) -> f64 {
    if ratio > 0.0 {
        ratio.ln().abs()
    } else {
        f64::INFINITY
    }
}

/// A measurement to four significant digits: 412000, 3.100, 0.1000.
fn number(value: f64) -> String {
    let digits = if value == 0.0 { 0 } else { value.abs().log10().floor() as i32 };
    let decimals = (3 - digits).clamp(0, 6) as usize;
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn find<'a>(changes: &'a [Change], path: &str) -> Option<&'a Change> {
        changes.iter().find(|c| c.path == path)
    }

    #[test]
    fn rows_are_matched_by_identity_not_position() {
        let baseline = json!({"results": [
            {"setup": "vpngw esp", "size": 64, "received_pps": 100.0},
            {"setup": "vpngw esp", "size": 1400, "received_pps": 400.0},
        ]});
        let current = json!({"results": [
            {"setup": "vpngw esp", "size": 1400, "received_pps": 300.0},
            {"setup": "vpngw esp", "size": 64, "received_pps": 110.0},
            {"setup": "kernel forward", "size": 64, "received_pps": 900.0},
        ]});
        let changes = compare(&baseline, &current);
        assert_eq!(changes.len(), 2);
        let big = find(&changes, "results[setup=vpngw esp,size=1400].received_pps").unwrap();
        assert_eq!((big.baseline, big.current, big.ratio), (400.0, 300.0, 0.75));
        let small = find(&changes, "results[setup=vpngw esp,size=64].received_pps").unwrap();
        assert!((small.ratio - 1.1).abs() < 1e-12);
    }

    #[test]
    fn integers_are_identity_in_rows_but_measured_at_top_level() {
        let baseline = json!({"bench": "fib", "results": [{"size": 64, "suite": "x", "mpps": 2.0}], "routes": 1000});
        let current = json!({"bench": "fib", "results": [{"size": 64, "suite": "x", "mpps": 3.0}], "routes": 1500});
        let changes = compare(&baseline, &current);
        let summary: Vec<(&str, f64)> = changes.iter().map(|c| (c.path.as_str(), c.ratio)).collect();
        assert_eq!(summary, [("results[size=64,suite=x].mpps", 1.5), ("routes", 1.5)]);
    }

    #[test]
    fn nested_measurements_in_a_row_are_compared() {
        let baseline = json!({"results": [{"setup": "a", "cores": {"gw": 0.5, "cgw": 0.25}}]});
        let current = json!({"results": [{"setup": "a", "cores": {"gw": 1.0, "cgw": 0.25}}]});
        let changes = compare(&baseline, &current);
        assert_eq!(find(&changes, "results[setup=a].cores.gw").unwrap().ratio, 2.0);
        assert_eq!(find(&changes, "results[setup=a].cores.cgw").unwrap().ratio, 1.0);
    }

    #[test]
    fn settings_and_raw_samples_are_skipped() {
        let report = |x: f64| {
            json!({
                "seconds": x, "rounds": 5, "round": 1,
                "options": {"window_ms": x},
                "results": [{"setup": "a", "mpps": x, "samples": [x, x], "per_round": [{"round": 0, "mpps": x}]}],
            })
        };
        let changes = compare(&report(1.0), &report(2.0));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["results[setup=a].mpps"]);
    }

    #[test]
    fn rows_without_unique_identity_fall_back_to_index() {
        let baseline = json!({"a": [1.0, 2.0, 4.0], "b": [{"k": "x", "v": 1.0}, {"k": "x", "v": 2.0}]});
        let current = json!({"a": [2.0, 2.0], "b": [{"k": "x", "v": 3.0}, {"k": "x", "v": 4.0}]});
        let changes = compare(&baseline, &current);
        let summary: Vec<(&str, f64)> = changes.iter().map(|c| (c.path.as_str(), c.ratio)).collect();
        assert_eq!(summary, [("a[0]", 2.0), ("a[1]", 1.0), ("b[0].v", 3.0), ("b[1].v", 2.0)]);
    }

    #[test]
    fn zero_baselines_and_missing_keys_are_left_out() {
        let baseline = json!({"loss_pct": 0.0, "gone": 1.0, "gbps": 10.0});
        let current = json!({"loss_pct": 0.5, "new": 1.0, "gbps": 9.0, "label": "x"});
        let changes = compare(&baseline, &current);
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].path, "gbps");
        assert_eq!(changes[0].ratio, 0.9);
    }

    #[test]
    fn different_benches_are_named_in_the_error() {
        let fib = json!({"bench": "fib"});
        let esp = json!({"bench": "esp"});
        assert_eq!(check_same_bench(&fib, &esp), Err(r#"baseline is a "fib" report, this run is "esp""#.to_string()));
        assert_eq!(check_same_bench(&esp, &esp.clone()), Ok(()));
        assert_eq!(
            check_same_bench(&json!({}), &esp),
            Err(r#"baseline is an unnamed report, this run is "esp""#.into())
        );
    }

    #[test]
    fn load_names_the_file_and_the_problem() {
        let dir = std::env::temp_dir().join(format!("vpngw-compare-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.json");
        let err = load(&missing).unwrap_err();
        assert!(err.contains("missing.json") && err.starts_with("cannot read"), "{err}");

        let broken = dir.join("broken.json");
        std::fs::write(&broken, "{\"bench\": ").unwrap();
        let err = load(&broken).unwrap_err();
        assert!(err.contains("broken.json") && err.contains("not a JSON report"), "{err}");

        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"bench": "esp"}"#).unwrap();
        assert_eq!(load(&good).unwrap(), json!({"bench": "esp"}));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn table_lists_big_moves_first_and_counts_the_rest() {
        let change =
            |path: &str, ratio: f64| Change { path: path.into(), baseline: 100.0, current: 100.0 * ratio, ratio };
        let changes = [change("small", 1.02), change("up", 1.5), change("down", 0.5), change("flat", 1.0)];
        let text = table(&changes, 0.05);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("measurement"));
        assert!(lines[1].starts_with("down") && lines[1].ends_with("-50.0%"), "{text}");
        assert!(lines[2].starts_with("up  ") && lines[2].ends_with("+50.0%"), "{text}");
        assert_eq!(lines[3], "2 of 4 unchanged (within 5.0%)");
        assert_eq!(table(&[], 0.05), "no numbers in common\n");
    }

    #[test]
    fn numbers_keep_four_significant_digits() {
        assert_eq!(number(412000.0), "412000");
        assert_eq!(number(3.1), "3.100");
        assert_eq!(number(0.1), "0.1000");
        assert_eq!(number(0.0), "0.000");
    }
}
