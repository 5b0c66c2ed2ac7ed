//! Draws benchmark results as SVG line charts and markdown tables, without dependencies.

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 420.0;
/// The plotting area's edges; the legend sits to its right.
const LEFT: f64 = 70.0;
const RIGHT: f64 = 550.0;
const TOP: f64 = 40.0;
const BOTTOM: f64 = 360.0;
/// Okabe and Ito's colours, which stay apart with the common kinds of colour blindness (yellow last: it is faint
/// on white).
const PALETTE: [&str; 8] = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#000000", "#F0E442"];
/// Values beyond this (or, on a log axis, below its inverse) are not measurements; skipping them keeps every
/// coordinate finite.
const LIMIT: f64 = 1e100;

/// One line on a chart: its points, drawn in the order given.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub x_log: bool,
    pub y_log: bool,
    pub series: Vec<Series>,
}

impl Chart {
    /// The chart as a standalone SVG document. Points that cannot be drawn (NaN, infinite, or not above 0 on a log
    /// axis) are skipped.
    pub fn svg(&self) -> String {
        let drawn: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                s.points.iter().copied().filter(|&(x, y)| drawable(x, self.x_log) && drawable(y, self.y_log)).collect()
            })
            .collect();
        let x_axis = Axis::new(drawn.iter().flatten().map(|p| p.0), self.x_log);
        let y_axis = Axis::new(drawn.iter().flatten().map(|p| p.1), self.y_log);
        let to_x = |x: f64| LEFT + x_axis.fraction(x) * (RIGHT - LEFT);
        let to_y = |y: f64| BOTTOM - y_axis.fraction(y) * (BOTTOM - TOP);

        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{HEIGHT}\" \
             viewBox=\"0 0 {WIDTH} {HEIGHT}\" font-family=\"sans-serif\" font-size=\"12\">\n\
             <rect width=\"{WIDTH}\" height=\"{HEIGHT}\" fill=\"white\"/>\n"
        );
        svg += &text((LEFT + RIGHT) / 2.0, 24.0, "middle", "font-size=\"15\" font-weight=\"bold\"", &self.title);

        for &tick in &x_axis.ticks {
            let x = to_x(tick);
            svg += &line(x, TOP, x, BOTTOM, "#dddddd");
            svg += &text(x, BOTTOM + 18.0, "middle", "", &compact(tick));
        }
        for &tick in &y_axis.ticks {
            let y = to_y(tick);
            svg += &line(LEFT, y, RIGHT, y, "#dddddd");
            svg += &text(LEFT - 8.0, y + 4.0, "end", "", &compact(tick));
        }
        svg += &line(LEFT, TOP, LEFT, BOTTOM, "#333333");
        svg += &line(LEFT, BOTTOM, RIGHT, BOTTOM, "#333333");
        svg += &text((LEFT + RIGHT) / 2.0, BOTTOM + 42.0, "middle", "", &self.x_label);
        let middle = (TOP + BOTTOM) / 2.0;
        svg +=
            &text(0.0, 0.0, "middle", &format!("transform=\"translate(18,{middle:.1}) rotate(-90)\""), &self.y_label);

        for (i, (series, points)) in self.series.iter().zip(&drawn).enumerate() {
            let colour = PALETTE[i % PALETTE.len()];
            if !points.is_empty() {
                let coordinates: Vec<String> =
                    points.iter().map(|&(x, y)| format!("{:.1},{:.1}", to_x(x), to_y(y))).collect();
                svg += &format!(
                    "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>\n",
                    coordinates.join(" ")
                );
                for &(x, y) in points {
                    svg +=
                        &format!("<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"/>\n", to_x(x), to_y(y));
                }
            }
            let y = TOP + 10.0 + 20.0 * i as f64;
            svg += &format!(
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"{colour}\" stroke-width=\"2\"/>\n",
                RIGHT + 15.0,
                RIGHT + 37.0
            );
            svg += &format!("<circle cx=\"{:.1}\" cy=\"{y:.1}\" r=\"3\" fill=\"{colour}\"/>\n", RIGHT + 26.0);
            svg += &text(RIGHT + 43.0, y + 4.0, "start", "", &series.name);
        }
        svg += "</svg>\n";
        svg
    }
}

fn drawable(value: f64, log: bool) -> bool {
    let positive_enough = !log || value > 1.0 / LIMIT;
    value.is_finite() && value.abs() < LIMIT && positive_enough
}

fn line(x1: f64, y1: f64, x2: f64, y2: f64, colour: &str) -> String {
    format!("<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{colour}\"/>\n")
}

fn text(x: f64, y: f64, anchor: &str, attributes: &str, content: &str) -> String {
    let attributes = if attributes.is_empty() { String::new() } else { format!(" {attributes}") };
    format!("<text x=\"{x:.1}\" y=\"{y:.1}\" text-anchor=\"{anchor}\"{attributes}>{}</text>\n", escape(content))
}

/// One axis: its ticks, the first and last of which are its ends.
struct Axis {
    log: bool,
    ticks: Vec<f64>,
}

impl Axis {
    fn new(values: impl Iterator<Item = f64>, log: bool) -> Axis {
        let (mut min, mut max) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
        if min > max {
            // Nothing to draw: an empty frame.
            (min, max) = if log { (1.0, 10.0) } else { (0.0, 1.0) };
        }
        let ticks = if log { log_ticks(min, max) } else { linear_ticks(min, max) };
        Axis { log, ticks }
    }

    /// Where `value` falls from one end of the axis (0) to the other (1).
    fn fraction(&self, value: f64) -> f64 {
        let (lo, hi) = (self.ticks[0], self.ticks[self.ticks.len() - 1]);
        if self.log {
            (value.ln() - lo.ln()) / (hi.ln() - lo.ln())
        } else {
            (value - lo) / (hi - lo)
        }
    }
}

/// Ticks a step of 1, 2 or 5 times a power of ten apart, covering min..max: as near 5 of them as such steps allow
/// (4 to 6 mostly, 3 or 7 for some ranges). Always at least two, in increasing order.
fn linear_ticks(min: f64, max: f64) -> Vec<f64> {
    let (min, max) = if min == max {
        // A flat line: from 0 to twice its value, so that it runs across the middle.
        match min {
            0.0 => (-1.0, 1.0),
            v if v > 0.0 => (0.0, 2.0 * v),
            v => (2.0 * v, 0.0),
        }
    } else {
        (min, max)
    };
    let power = 10f64.powf(((max - min) / 4.0).log10().floor());
    let mut best: Option<Vec<f64>> = None;
    for scale in [0.1, 1.0, 10.0] {
        for multiple in [1.0, 2.0, 5.0] {
            let Some(ticks) = ticks_every(min, max, multiple * power * scale) else { continue };
            let off = |ticks: &Vec<f64>| ticks.len().abs_diff(5);
            if best.as_ref().is_none_or(|best| off(&ticks) < off(best)) {
                best = Some(ticks);
            }
        }
    }
    best.unwrap_or(vec![min, max])
}

/// The multiples of `step` from the last at or below min to the first at or above max; None if that is fewer than
/// two or too many to label.
fn ticks_every(min: f64, max: f64, step: f64) -> Option<Vec<f64>> {
    if !step.is_finite() || step <= 0.0 {
        return None;
    }
    // The slack keeps a rounding error from adding a tick past a value that sits on one.
    let first = (min / step + 1e-9).floor();
    let last = (max / step - 1e-9).ceil();
    if !(first.is_finite() && last.is_finite()) || last <= first || last - first > 50.0 {
        return None;
    }
    Some((0..=(last - first) as i64).map(|i| (first + i as f64) * step).collect())
}

/// Powers of ten covering min..max (every second or third when there are many decades). When the values span
/// under two decades, 1, 2 and 5 times the powers of ten instead, from the last at or below min to the first at
/// or above max. min must be above 0.
fn log_ticks(min: f64, max: f64) -> Vec<f64> {
    let (min, max) = if min == max { (min / 2.0, max * 2.0) } else { (min, max) };
    let (low, high) = (min.log10().floor() as i32, max.log10().ceil() as i32);
    if (max / min).log10() < 2.0 {
        let candidates: Vec<f64> =
            (low - 1..=high + 1).flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e))).collect();
        let start = candidates.iter().rposition(|&c| c <= min * (1.0 + 1e-9)).unwrap_or(0);
        let end = candidates.iter().position(|&c| c >= max * (1.0 - 1e-9)).unwrap_or(candidates.len() - 1);
        return candidates[start..=end.max(start + 1)].to_vec();
    }
    let decades = (high - low).unsigned_abs();
    let every = decades.div_ceil(8).max(1);
    let high = low + (decades.div_ceil(every) * every) as i32;
    (low..=high).step_by(every as usize).map(|e| 10f64.powi(e)).collect()
}

/// A tick label: 1.2k, 3.4M, 0.5, -20 (up to four significant digits).
fn compact(value: f64) -> String {
    if value == 0.0 {
        return "0".to_string();
    }
    let (scaled, suffix) = match value.abs() {
        a if a >= 1e12 => (value / 1e12, "T"),
        a if a >= 1e9 => (value / 1e9, "G"),
        a if a >= 1e6 => (value / 1e6, "M"),
        a if a >= 1e3 => (value / 1e3, "k"),
        _ => (value, ""),
    };
    let decimals = (3 - scaled.abs().log10().floor() as i32).clamp(0, 15) as usize;
    let digits = format!("{scaled:.decimals$}");
    let digits = if digits.contains('.') { digits.trim_end_matches('0').trim_end_matches('.') } else { &digits };
    format!("{digits}{suffix}")
}

/// Text made safe to put in XML content or an attribute.
fn escape(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => escaped += "&amp;",
            '<' => escaped += "&lt;",
            '>' => escaped += "&gt;",
            '"' => escaped += "&quot;",
            _ => escaped.push(c),
        }
    }
    escaped
}

/// A markdown table whose columns line up in plain text too. A `|` in a cell is escaped, a line break becomes a
/// space; a row shorter than the others gets empty cells.
pub fn markdown_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).chain([headers.len()]).max().unwrap_or(0);
    if columns == 0 {
        return String::new();
    }
    let cells = |row: &[&str]| -> Vec<String> {
        (0..columns).map(|i| row.get(i).map_or(String::new(), |cell| markdown_cell(cell))).collect()
    };
    let header = cells(headers);
    let body: Vec<Vec<String>> =
        rows.iter().map(|row| cells(&row.iter().map(String::as_str).collect::<Vec<_>>())).collect();
    let widths: Vec<usize> = (0..columns)
        .map(|i| body.iter().chain([&header]).map(|row| row[i].chars().count()).max().unwrap_or(0).max(3))
        .collect();
    let line = |row: &[String]| {
        let padded: Vec<String> = row.iter().zip(&widths).map(|(cell, &width)| format!("{cell:<width$}")).collect();
        format!("| {} |\n", padded.join(" | "))
    };
    let separator: Vec<String> = widths.iter().map(|&width| "-".repeat(width)).collect();
    let mut table = line(&header) + &line(&separator);
    for row in &body {
        table += &line(row);
    }
    table
}

fn markdown_cell(text: &str) -> String {
    text.replace('|', "\\|").replace("\r\n", " ").replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(name: &str, points: &[(f64, f64)]) -> Series {
        Series { name: name.to_string(), points: points.to_vec() }
    }

    fn chart(x_log: bool, y_log: bool, series: Vec<Series>) -> Chart {
        Chart {
            title: "ESP throughput".into(),
            x_label: "packet size (bytes)".into(),
            y_label: "received (pps)".into(),
            x_log,
            y_log,
            series,
        }
    }

    /// Checks what every chart must be: one SVG document, nothing unprintable, every name in it escaped.
    fn check_svg(chart: &Chart) -> String {
        let svg = chart.svg();
        assert!(svg.starts_with("<svg"), "{svg}");
        assert!(svg.trim_end().ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<svg").count(), 1);
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        for s in &chart.series {
            assert!(svg.contains(&format!(">{}</text>", escape(&s.name))), "{} missing", s.name);
        }
        svg
    }

    fn assert_close(got: &[f64], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{got:?} vs {want:?}");
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() <= 1e-9 * w.abs().max(1.0), "{got:?} vs {want:?}");
        }
    }

    #[test]
    fn chart_has_a_line_and_a_legend_entry_per_series() {
        let chart = chart(
            true,
            false,
            vec![
                series("vpngw <esp> & \"friends\"", &[(64.0, 1.2e6), (512.0, 9.0e5), (1400.0, 4.1e5)]),
                series("kernel", &[(64.0, 2.0e6), (512.0, 1.5e6), (1400.0, 8.0e5)]),
            ],
        );
        let svg = check_svg(&chart);
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert_eq!(svg.matches("<circle").count(), 6 + 2);
        assert!(svg.contains("vpngw &lt;esp&gt; &amp; &quot;friends&quot;"));
        assert!(svg.contains(PALETTE[0]) && svg.contains(PALETTE[1]));
        assert!(svg.contains(">ESP throughput</text>") && svg.contains(">packet size (bytes)</text>"));
        assert!(svg.contains(">1000</text>") || svg.contains(">1k</text>"), "{svg}");
        assert!(svg.contains(">2M</text>"), "{svg}");
    }

    #[test]
    fn edge_cases_draw_without_nan() {
        check_svg(&chart(false, false, vec![]));
        check_svg(&chart(true, true, vec![]));
        let one = check_svg(&chart(false, false, vec![series("one", &[(3.0, 4.0)])]));
        assert_eq!(one.matches("<polyline").count(), 1);
        check_svg(&chart(false, false, vec![series("flat", &[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)])]));
        check_svg(&chart(false, false, vec![series("zeros", &[(0.0, 0.0), (0.0, 0.0)])]));
        check_svg(&chart(true, true, vec![series("flat", &[(10.0, 10.0), (10.0, 10.0)])]));

        let mixed = series("mixed", &[(0.0, 1.0), (-1.0, 2.0), (10.0, -3.0), (f64::NAN, 1.0), (100.0, f64::INFINITY)]);
        let svg = check_svg(&chart(true, true, vec![mixed.clone(), series("fine", &[(10.0, 5.0), (100.0, 50.0)])]));
        assert_eq!(svg.matches("<polyline").count(), 1, "nothing in `mixed` is drawable on log axes");
        let svg = check_svg(&chart(false, false, vec![mixed]));
        assert_eq!(svg.matches("<circle").count(), 3 + 1, "three finite points and a legend marker");
    }

    #[test]
    fn linear_ticks_are_nice() {
        assert_close(&linear_ticks(0.0, 7.3), &[0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_close(&linear_ticks(0.0, 1.0), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        assert_close(&linear_ticks(410_000.0, 1_200_000.0), &[400e3, 600e3, 800e3, 1000e3, 1200e3]);
        assert_close(&linear_ticks(-3.0, 3.0), &[-4.0, -2.0, 0.0, 2.0, 4.0]);
        assert_close(&linear_ticks(1.0, 1.0), &[0.0, 0.5, 1.0, 1.5, 2.0]);
        assert_close(&linear_ticks(0.0, 0.0), &[-1.0, -0.5, 0.0, 0.5, 1.0]);
        for (min, max) in [(0.0, 7.3), (0.013, 0.92), (5.0, 5.0), (-3.0, -3.0), (-5.0, 1e7), (99.0, 101.0), (0.5, 1.5)]
        {
            let ticks = linear_ticks(min, max);
            assert!((3..=7).contains(&ticks.len()), "{min}..{max}: {ticks:?}");
            assert!(ticks[0] <= min && *ticks.last().unwrap() >= max, "{min}..{max}: {ticks:?}");
        }
    }

    #[test]
    fn log_ticks_are_powers_of_ten_or_1_2_5() {
        assert_close(&log_ticks(1.0, 1e6), &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5, 1e6]);
        assert_close(&log_ticks(3.0, 2e4), &[1.0, 10.0, 100.0, 1e3, 1e4, 1e5]);
        assert_close(&log_ticks(64.0, 1400.0), &[50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0]);
        assert_close(&log_ticks(10.0, 10.0), &[5.0, 10.0, 20.0]);
        let wide = log_ticks(1e-3, 1e15);
        assert_close(&wide, &[1e-3, 1e0, 1e3, 1e6, 1e9, 1e12, 1e15]);
    }

    #[test]
    fn labels_are_compact() {
        let labels: Vec<String> = [0.0, 0.5, 1200.0, 3.4e6, 2e9, -20.0, 0.0015, 412_000.0, 0.30000000000000004]
            .iter()
            .map(|&v| compact(v))
            .collect();
        assert_eq!(labels, ["0", "0.5", "1.2k", "3.4M", "2G", "-20", "0.0015", "412k", "0.3"]);
    }

    #[test]
    fn xml_text_is_escaped() {
        assert_eq!(escape(r#"a<b> & "c""#), "a&lt;b&gt; &amp; &quot;c&quot;");
        assert_eq!(escape("plain"), "plain");
    }

    #[test]
    fn markdown_table_escapes_pipes_and_lines_up() {
        let rows = vec![vec!["vpngw | esp".to_string(), "412k".to_string()], vec!["kernel".to_string()]];
        let table = markdown_table(&["setup", "pps"], &rows);
        assert_eq!(
            table,
            "| setup        | pps  |\n\
             | ------------ | ---- |\n\
             | vpngw \\| esp | 412k |\n\
             | kernel       |      |\n"
        );
        assert_eq!(markdown_table(&[], &[]), "");
        assert_eq!(markdown_table(&["a"], &[]), "| a   |\n| --- |\n");
    }
}
