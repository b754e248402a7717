//! A hand-written SVG plot: the latency CDF of each scenario (x = seconds from create to
//! `Succeeded`, y = fraction of the scenario's clones that reached `Succeeded` by then).

use std::fmt::Write as _;

/// One line of the plot.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    /// Latencies in seconds (any order). The CDF is over `total` clones, so clones that never
    /// succeeded keep the line below 1.
    pub values: Vec<f64>,
    pub total: usize,
}

const WIDTH: f64 = 1000.0;
const HEIGHT: f64 = 500.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 610.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 430.0;
const LEGEND_X: f64 = 630.0;
/// Points per line at most (the plot is 540 pixels wide).
const MAX_POINTS: usize = 400;
const COLORS: [&str; 8] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];
const DASHED_FROM: usize = 8;

/// Escapes text for an XML text node or attribute value.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\n' && c != '\t' => {}
            c => out.push(c),
        }
    }
    out
}

/// A "nice" tick step (1, 2 or 5 times a power of ten) giving about `target` ticks up to `max`.
pub fn tick_step(max: f64, target: usize) -> f64 {
    if !(max.is_finite() && max > 0.0) {
        return 1.0;
    }
    let raw = max / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let fraction = raw / magnitude;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * magnitude
}

fn decimals(step: f64) -> usize {
    if step >= 1.0 {
        0
    } else {
        (-step.log10().floor()) as usize
    }
}

/// The CDF points `(seconds, fraction)` of one series, at most [`MAX_POINTS`] + 1 of them.
pub fn cdf_points(values: &[f64], total: usize) -> Vec<(f64, f64)> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let total = total.max(n).max(1) as f64;
    if n == 0 {
        return Vec::new();
    }
    let mut points = vec![(sorted[0], 0.0)];
    let steps = n.min(MAX_POINTS);
    for k in 0..steps {
        // Evenly spaced ranks, always ending with the last value.
        let i = if steps == 1 {
            n - 1
        } else {
            (k * (n - 1)) / (steps - 1)
        };
        points.push((sorted[i], (i + 1) as f64 / total));
    }
    points.dedup();
    points
}

/// The whole SVG document.
pub fn latency_cdf(title: &str, series: &[Series]) -> String {
    let max_x = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let step = tick_step(max_x, 8);
    let x_max = if max_x > 0.0 {
        (max_x / step).ceil() * step
    } else {
        step
    };
    let x = |seconds: f64| LEFT + (seconds / x_max) * (RIGHT - LEFT);
    let y = |fraction: f64| BOTTOM - fraction * (BOTTOM - TOP);

    let mut svg = String::new();
    let _ = writeln!(svg, r#"<?xml version="1.0" encoding="UTF-8"?>"#);
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect x="0" y="0" width="{WIDTH}" height="{HEIGHT}" fill="white"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="28" font-size="16" text-anchor="middle">{}</text>"#,
        (LEFT + RIGHT) / 2.0,
        escape(title)
    );

    // Grid, ticks and tick labels.
    let _ = writeln!(svg, r##"<g stroke="#dddddd" stroke-width="1">"##);
    let mut tick = 0.0;
    let mut x_ticks = Vec::new();
    while tick <= x_max + step / 2.0 {
        x_ticks.push(tick);
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{BOTTOM}"/>"#,
            x(tick)
        );
        tick += step;
    }
    let y_ticks = [0.0, 0.25, 0.5, 0.75, 1.0];
    for fraction in y_ticks {
        let _ = writeln!(
            svg,
            r#"<line x1="{LEFT}" y1="{0:.1}" x2="{RIGHT}" y2="{0:.1}"/>"#,
            y(fraction)
        );
    }
    let _ = writeln!(svg, "</g>");
    let _ = writeln!(svg, r#"<g stroke="black" stroke-width="1">"#);
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{BOTTOM}" x2="{RIGHT}" y2="{BOTTOM}"/>"#
    );
    let _ = writeln!(
        svg,
        r#"<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{BOTTOM}"/>"#
    );
    for &tick in &x_ticks {
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{BOTTOM}" x2="{0:.1}" y2="{1}"/>"#,
            x(tick),
            BOTTOM + 5.0
        );
    }
    for fraction in y_ticks {
        let _ = writeln!(
            svg,
            r#"<line x1="{}" y1="{1:.1}" x2="{LEFT}" y2="{1:.1}"/>"#,
            LEFT - 5.0,
            y(fraction)
        );
    }
    let _ = writeln!(svg, "</g>");
    let places = decimals(step);
    for &tick in &x_ticks {
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{tick:.places$}</text>"#,
            x(tick),
            BOTTOM + 20.0
        );
    }
    for fraction in y_ticks {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{fraction:.2}</text>"#,
            LEFT - 8.0,
            y(fraction) + 4.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="{}" text-anchor="middle">seconds from the create call returning to Succeeded seen by a watch</text>"#,
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 45.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="20" y="{0}" text-anchor="middle" transform="rotate(-90 20 {0})">fraction of clones Succeeded</text>"#,
        (TOP + BOTTOM) / 2.0
    );

    if series.iter().all(|s| s.values.is_empty()) {
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle" fill="#888888">no clone succeeded</text>"##,
            (LEFT + RIGHT) / 2.0,
            (TOP + BOTTOM) / 2.0
        );
    }

    // Lines and legend.
    let _ = writeln!(
        svg,
        r#"<text x="{LEGEND_X}" y="{TOP}" font-weight="bold">scenario</text>"#
    );
    for (index, s) in series.iter().enumerate() {
        let color = COLORS[index % COLORS.len()];
        let dash = if index >= DASHED_FROM {
            r#" stroke-dasharray="6 3""#
        } else {
            ""
        };
        let points: Vec<String> = cdf_points(&s.values, s.total)
            .into_iter()
            .map(|(sx, sy)| format!("{:.1},{:.1}", x(sx), y(sy)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{}"><title>{}</title></polyline>"#,
            points.join(" "),
            escape(&s.label)
        );
        let legend_y = TOP + 22.0 * (index as f64 + 1.0);
        let _ = writeln!(
            svg,
            r#"<line x1="{LEGEND_X}" y1="{0:.1}" x2="{1}" y2="{0:.1}" stroke="{color}" stroke-width="3"{dash}/>"#,
            legend_y - 4.0,
            LEGEND_X + 24.0
        );
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{legend_y:.1}" font-size="11">{}</text>"#,
            LEGEND_X + 30.0,
            escape(&s.label)
        );
    }
    let _ = writeln!(svg, "</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small well-formedness check: tags balance, attributes are quoted, text has no raw `<`
    /// or stray `&`. Returns the element names in document order.
    fn check_xml(text: &str) -> Result<Vec<String>, String> {
        let mut stack: Vec<String> = Vec::new();
        let mut elements = Vec::new();
        let mut rest = text;
        let mut roots = 0;
        while let Some(open) = rest.find('<') {
            check_text(&rest[..open])?;
            let after = &rest[open..];
            if let Some(body) = after.strip_prefix("<?") {
                let end = body.find("?>").ok_or("unterminated declaration")?;
                rest = &body[end + 2..];
                continue;
            }
            if let Some(body) = after.strip_prefix("<!--") {
                let end = body.find("-->").ok_or("unterminated comment")?;
                rest = &body[end + 3..];
                continue;
            }
            let close = tag_end(after).ok_or("unterminated tag")?;
            let tag = &after[1..close];
            rest = &after[close + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                let top = stack
                    .pop()
                    .ok_or(format!("</{name}> without an open tag"))?;
                if top != name.trim() {
                    return Err(format!("</{name}> closes <{top}>"));
                }
                continue;
            }
            let self_closing = tag.ends_with('/');
            let tag = tag.trim_end_matches('/');
            let name = tag.split_whitespace().next().ok_or("empty tag")?.to_owned();
            check_attributes(&tag[name.len()..])?;
            if stack.is_empty() {
                roots += 1;
            }
            elements.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
        }
        check_text(rest)?;
        if !stack.is_empty() {
            return Err(format!("unclosed: {stack:?}"));
        }
        if roots != 1 {
            return Err(format!("{roots} root elements"));
        }
        Ok(elements)
    }

    /// The index of the `>` ending the tag at the start of `text`, skipping quoted values.
    fn tag_end(text: &str) -> Option<usize> {
        let mut quote = None;
        for (i, c) in text.char_indices() {
            match (quote, c) {
                (None, '"' | '\'') => quote = Some(c),
                (Some(q), c) if c == q => quote = None,
                (None, '>') => return Some(i),
                _ => {}
            }
        }
        None
    }

    fn check_attributes(text: &str) -> Result<(), String> {
        let mut rest = text.trim();
        while !rest.is_empty() {
            let eq = rest
                .find('=')
                .ok_or(format!("attribute without '=': {rest}"))?;
            let name = rest[..eq].trim();
            if name.is_empty() || name.contains(char::is_whitespace) {
                return Err(format!("bad attribute name {name:?}"));
            }
            let value = &rest[eq + 1..];
            let quote = value.chars().next().ok_or("attribute without value")?;
            if quote != '"' && quote != '\'' {
                return Err(format!("unquoted attribute {name}"));
            }
            let end = value[1..].find(quote).ok_or("unterminated attribute")?;
            check_text(&value[1..=end])?;
            rest = value[end + 2..].trim_start();
        }
        Ok(())
    }

    fn check_text(text: &str) -> Result<(), String> {
        if text.contains('<') {
            return Err(format!("raw '<' in {text:?}"));
        }
        for (i, _) in text.match_indices('&') {
            let entity = &text[i..];
            let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                .iter()
                .any(|e| entity.starts_with(e));
            if !ok {
                return Err(format!("stray '&' in {text:?}"));
            }
        }
        Ok(())
    }

    #[test]
    fn the_checker_refuses_broken_xml() {
        assert!(check_xml("<a><b></a>").is_err());
        assert!(check_xml("<a x=1/>").is_err());
        assert!(check_xml("<a>1 < 2</a>").is_err());
        assert!(check_xml("<a>fish & chips</a>").is_err());
        assert!(check_xml("<a/><b/>").is_err());
        assert!(check_xml("<?xml version=\"1.0\"?><a x=\"1\"><b/>t&amp;t</a>").is_ok());
    }

    #[test]
    fn the_plot_is_well_formed_with_one_line_per_series() {
        let series: Vec<Series> = (0..6)
            .map(|i| Series {
                label: format!("N={} <& \"quoted\">", 100 * (i + 1)),
                values: (0..(100 * (i + 1))).map(|v| f64::from(v) / 37.0).collect(),
                total: 100 * (i + 1) as usize,
            })
            .collect();
        let svg = latency_cdf("Latency & more", &series);
        let elements = check_xml(&svg).unwrap();
        assert_eq!(elements[0], "svg");
        assert_eq!(elements.iter().filter(|e| *e == "polyline").count(), 6);
        assert!(svg.contains("Latency &amp; more"));
        // Each line ends at the top right of its own data: all 600 clones of the last one.
        assert!(svg.contains("N=600 &lt;&amp; &quot;quoted&quot;&gt;"));
    }

    #[test]
    fn an_empty_plot_is_still_valid() {
        let svg = latency_cdf(
            "nothing",
            &[Series {
                label: "none".into(),
                values: vec![],
                total: 10,
            }],
        );
        let elements = check_xml(&svg).unwrap();
        assert_eq!(elements.iter().filter(|e| *e == "polyline").count(), 1);
        assert!(svg.contains("no clone succeeded"));
        let svg = latency_cdf("no series", &[]);
        assert!(check_xml(&svg).is_ok());
    }

    #[test]
    fn cdf_points_are_downsampled_and_reach_the_success_fraction() {
        let values: Vec<f64> = (0..5000).map(f64::from).collect();
        let points = cdf_points(&values, 5000);
        assert!(points.len() <= MAX_POINTS + 1);
        assert_eq!(points[0], (0.0, 0.0));
        assert_eq!(points.last().copied(), Some((4999.0, 1.0)));
        // Half of the clones failed: the line stops at 0.5.
        let points = cdf_points(&[1.0, 2.0], 4);
        assert_eq!(points.last().copied(), Some((2.0, 0.5)));
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
    }

    #[test]
    fn nice_steps() {
        assert_eq!(tick_step(10.0, 5), 2.0);
        assert_eq!(tick_step(37.0, 8), 5.0);
        assert_eq!(tick_step(0.9, 8), 0.2);
        assert_eq!(tick_step(0.0, 8), 1.0);
        assert_eq!(tick_step(1000.0, 8), 200.0);
        assert_eq!(decimals(0.2), 1);
        assert_eq!(decimals(0.05), 2);
        assert_eq!(decimals(5.0), 0);
    }
}
