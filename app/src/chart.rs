//! Line charts drawn as SVG by the app itself (no chart library, no script).

use leptos::prelude::*;

const W: f64 = 600.0;
const H: f64 = 140.0;

/// The SVG path of `points` (x in milliseconds, y in the value's unit), scaled
/// into the chart box with `y_max` at the top.
pub fn path_of(points: &[(i64, f64)], x_min: i64, x_max: i64, y_max: f64) -> String {
    let span = (x_max - x_min).max(1) as f64;
    let y_max = if y_max > 0.0 { y_max } else { 1.0 };
    let mut d = String::new();
    for (i, (x, y)) in points.iter().enumerate() {
        let px = ((*x - x_min) as f64 / span * W).clamp(0.0, W);
        let py = (H - (y / y_max).clamp(0.0, 1.0) * H).clamp(0.0, H);
        d.push_str(&format!(
            "{}{px:.1},{py:.1}",
            if i == 0 { "M" } else { " L" }
        ));
    }
    d
}

/// A titled line chart; `format` renders the top-of-scale value.
#[component]
pub fn LineChart(
    title: &'static str,
    testid: &'static str,
    points: Vec<(i64, f64)>,
    x_min: i64,
    x_max: i64,
    /// Fixed top of the scale (e.g. 100 for percentages); otherwise the data's maximum.
    #[prop(optional)]
    y_max: Option<f64>,
    format: fn(f64) -> String,
) -> impl IntoView {
    let top = y_max.unwrap_or_else(|| points.iter().map(|p| p.1).fold(0.0, f64::max) * 1.1);
    let latest = points
        .last()
        .map(|p| format(p.1))
        .unwrap_or_else(|| "no data".into());
    let d = path_of(&points, x_min, x_max, top);
    let empty = points.is_empty();
    view! {
        <figure class="card" data-testid=testid>
            <figcaption class="flex items-baseline justify-between">
                <span class="card-label">{title}</span>
                <span class="text-sm font-semibold" data-testid=format!("{testid}-latest")>{latest}</span>
            </figcaption>
            <svg viewBox=format!("0 0 {W} {H}") class="mt-2 h-32 w-full" preserveAspectRatio="none" role="img" aria-label=title>
                <line x1="0" y1=H.to_string() x2=W.to_string() y2=H.to_string() stroke="#cbd5e1" stroke-width="1" />
                <line x1="0" y1="0" x2=W.to_string() y2="0" stroke="#e2e8f0" stroke-width="1" stroke-dasharray="4 4" />
                {(!empty).then(|| view! { <path d=d.clone() fill="none" stroke="#0369a1" stroke-width="2" vector-effect="non-scaling-stroke" /> })}
            </svg>
            <div class="mt-1 flex justify-between text-xs text-slate-500">
                <span>{if empty { "No samples in this range yet.".to_string() } else { format!("max {}", format(top)) }}</span>
            </div>
        </figure>
    }
}

pub fn percent(v: f64) -> String {
    format!("{v:.1} %")
}

pub fn bytes(v: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

pub fn rate(v: f64) -> String {
    format!("{}/s", bytes(v))
}

pub fn plain(v: f64) -> String {
    format!("{v:.2}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_scale_into_the_box() {
        assert_eq!(path_of(&[], 0, 10, 1.0), "");
        assert_eq!(
            path_of(&[(0, 0.0), (10, 1.0)], 0, 10, 1.0),
            "M0.0,140.0 L600.0,0.0"
        );
        assert_eq!(
            path_of(&[(5, 2.0)], 0, 10, 1.0),
            "M300.0,0.0",
            "values above the scale are clamped"
        );
        assert_eq!(bytes(1536.0), "1.5 KiB");
        assert_eq!(percent(12.345), "12.3 %");
    }
}
