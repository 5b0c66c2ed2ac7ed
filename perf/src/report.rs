//! `--report DIR`: a run written up for people, as markdown (`NAME.md`)
//! with SVG charts beside it (`NAME-*.svg`), from the same report the JSON
//! is made of.

use crate::plot::{markdown_table, Chart};
use crate::{Table, Target};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// A written-up run.
pub struct Doc {
    pub title: String,
    /// What was measured and how, in a sentence or two.
    pub intro: String,
    /// Headed sections of markdown (tables, notes).
    pub sections: Vec<(String, String)>,
    /// Charts by short name (the file is `NAME-SHORT.svg`).
    pub charts: Vec<(&'static str, Chart)>,
    pub targets: Vec<Target>,
}

impl Doc {
    pub fn new(title: impl Into<String>, intro: impl Into<String>) -> Self {
        Doc { title: title.into(), intro: intro.into(), sections: Vec::new(), charts: Vec::new(), targets: Vec::new() }
    }

    /// A section holding a table.
    pub fn table(&mut self, heading: &str, note: &str, table: &Table) {
        let mut body = String::new();
        if !note.is_empty() {
            body += note;
            body += "\n\n";
        }
        body += &markdown_table(&table.headers(), &table.rows);
        self.sections.push((heading.into(), body));
    }
}

/// Writes `NAME.md` and its charts into `dir` (made if missing); returns
/// the files written.
pub fn write(dir: &Path, name: &str, doc: &Doc) -> Result<Vec<PathBuf>, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut written = Vec::new();
    let mut md = format!("# {}\n\n{}\n\n", doc.title, doc.intro);
    for (short, chart) in &doc.charts {
        let file = format!("{name}-{short}.svg");
        let path = dir.join(&file);
        std::fs::write(&path, chart.svg()).map_err(|e| format!("{}: {e}", path.display()))?;
        let _ = writeln!(md, "![{}]({file})\n", chart.title);
        written.push(path);
    }
    for (heading, body) in &doc.sections {
        let _ = writeln!(md, "## {heading}\n\n{}", body.trim_end());
        md += "\n";
    }
    if !doc.targets.is_empty() {
        let rows: Vec<Vec<String>> = doc
            .targets
            .iter()
            .map(|t| vec![t.what.clone(), t.want.clone(), t.got.clone(), if t.met { "met" } else { "NOT MET" }.into()])
            .collect();
        let _ = writeln!(md, "## Targets\n\n{}", markdown_table(&["target", "want", "got", ""], &rows));
    }
    let path = dir.join(format!("{name}.md"));
    std::fs::write(&path, md).map_err(|e| format!("{}: {e}", path.display()))?;
    written.insert(0, path);
    Ok(written)
}

/// A write-up of any report: its scalar fields as a list, each array of
/// result rows as a table, and its targets.
pub fn generic(report: &serde_json::Value) -> Doc {
    use serde_json::Value;
    let bench = report["bench"].as_str().unwrap_or("benchmark");
    let mut doc = Doc::new(format!("vpngw-bench {bench}"), "Every result of the run; the JSON has the rest.");
    let cell = |v: &Value| match v {
        Value::Number(n) if n.is_f64() => format!("{:.3}", n.as_f64().unwrap_or(0.0)),
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    };
    let Some(fields) = report.as_object() else { return doc };
    for (key, value) in fields {
        let Some(rows) = value.as_array() else { continue };
        if key == "targets" {
            doc.targets = rows.iter().filter_map(|t| serde_json::from_value(t.clone()).ok()).collect();
            continue;
        }
        let Some(first) = rows.first().and_then(Value::as_object) else { continue };
        let headers: Vec<String> =
            first.iter().filter(|(_, v)| !v.is_array() && !v.is_object()).map(|(k, _)| k.clone()).collect();
        let rows = rows.iter().map(|r| headers.iter().map(|h| cell(&r[h.as_str()])).collect()).collect();
        doc.table(key, "", &Table { headers, rows });
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plot::Series;

    #[test]
    fn a_doc_becomes_markdown_with_its_charts_beside_it() {
        let dir = std::env::temp_dir().join(format!("vpngw-report-test-{}", std::process::id()));
        let mut doc = Doc::new("On the wire", "What was measured.");
        let table = Table::new(&["setup", "kpps"], vec![vec!["vpngw | esp".into(), "412.0".into()]]);
        doc.table("Throughput", "Medians.", &table);
        doc.charts.push((
            "throughput",
            Chart {
                title: "Received packets/s".into(),
                x_label: "bytes".into(),
                y_label: "kpps".into(),
                x_log: true,
                y_log: false,
                series: vec![Series { name: "vpngw esp".into(), points: vec![(64.0, 230.0), (1400.0, 200.0)] }],
            },
        ));
        doc.targets.push(Target { what: "ratio".into(), want: ">= 5".into(), got: "6.1".into(), met: true });
        let files = write(&dir, "wire", &doc).unwrap();
        assert_eq!(files, vec![dir.join("wire.md"), dir.join("wire-throughput.svg")]);
        let md = std::fs::read_to_string(&files[0]).unwrap();
        assert!(md.starts_with("# On the wire\n\nWhat was measured.\n"));
        assert!(md.contains("![Received packets/s](wire-throughput.svg)"));
        assert!(md.contains("## Throughput\n\nMedians.\n\n| setup"));
        assert!(md.contains("vpngw \\| esp"), "{md}");
        assert!(md.contains("| ratio  | >= 5 | 6.1 | met |") || md.contains("| ratio | >= 5 | 6.1 | met |"), "{md}");
        let svg = std::fs::read_to_string(&files[1]).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("vpngw esp"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
