//! `fetchfs bench` results as a text table and as an SVG plot (plotters).

use std::fmt::Write;
use std::path::Path;

use plotters::prelude::*;

use super::Results;

fn optional_ms(value: Option<f64>) -> String {
    value.map_or("n/a (HTTPS endpoint)".into(), |v| format!("{v:.2} ms"))
}

pub fn table(r: &Results) -> String {
    let mut out = String::new();
    let mut row = |what: &str, value: String| {
        let _ = writeln!(out, "| {what} | {value} |");
    };
    row("object", format!("{} ({} bytes) at {}", r.object, r.size, r.endpoint));
    row("resolve / TCP connect (probe)", format!("{} / {}", optional_ms(r.resolve_ms), optional_ms(r.tcp_connect_ms)));
    row("first byte, new connection", format!("{:.2} ms", r.cold_first_byte_ms));
    row("first byte, warm connection", format!("{:.2} ms", r.warm_first_byte_ms));
    row("connection setup (new - warm)", format!("{:.2} ms", (r.cold_first_byte_ms - r.warm_first_byte_ms).max(0.0)));
    row("one GET stream", format!("{:.0} MB/s", r.single_stream_mb_s));
    if let Some(p) = &r.probe_stream {
        row(
            "one stream, probe socket (autotuned / 8 MiB SO_RCVBUF)",
            format!("{:.0} / {:.0} MB/s", p.autotuned.mb_per_s, p.rcvbuf_8_mib.mb_per_s),
        );
    }
    for p in &r.parallel {
        row(&format!("{} GETs x {} MiB parts", p.connections, p.part_size_mib), format!("{:.0} MB/s", p.mb_s));
    }
    if let Some(m) = &r.mount {
        row(&format!("read through the mount ({})", m.path.display()), format!("{:.0} MB/s", m.mb_s));
    }
    let rec = r.recommended;
    row("recommended", format!("--part-size {} --max-connections {}", rec.part_size_mib, rec.max_connections));
    format!("| measure | result |\n|---|---|\n{out}")
}

/// MB/s against the number of GETs (log scale), one line per part size, with the single stream
/// and the mount as horizontal references.
pub fn plot(r: &Results, path: &Path) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("drawing {}: {e}", path.display());
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| failed(&e))?;
    let max_connections = r.parallel.iter().map(|p| p.connections).max().unwrap_or(1).max(2) as f64;
    let top = r
        .parallel
        .iter()
        .map(|p| p.mb_s)
        .chain([r.single_stream_mb_s])
        .chain(r.mount.as_ref().map(|m| m.mb_s))
        .fold(1.0, f64::max)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(format!("fetchfs bench: {}", r.object), ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(65)
        .build_cartesian_2d((1f64..max_connections).log_scale(), 0f64..top)
        .map_err(|e| failed(&e))?;
    chart.configure_mesh().x_desc("parallel ranged GETs").y_desc("MB/s").draw().map_err(|e| failed(&e))?;
    let mut sizes: Vec<u64> = r.parallel.iter().map(|p| p.part_size_mib).collect();
    sizes.sort_unstable();
    sizes.dedup();
    for (i, size) in sizes.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points: Vec<(f64, f64)> =
            r.parallel.iter().filter(|p| p.part_size_mib == *size).map(|p| (p.connections as f64, p.mb_s)).collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(|e| failed(&e))?
            .label(format!("{size} MiB parts"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2)));
        chart.draw_series(points.into_iter().map(|p| Circle::new(p, 3, color.filled()))).map_err(|e| failed(&e))?;
    }
    let mut references = vec![("one GET stream".to_owned(), r.single_stream_mb_s, BLACK)];
    if let Some(m) = &r.mount {
        references.push(("through the mount".to_owned(), m.mb_s, RED));
    }
    for (label, value, color) in references {
        chart
            .draw_series(LineSeries::new(vec![(1.0, value), (max_connections, value)], color.stroke_width(1)))
            .map_err(|e| failed(&e))?
            .label(label)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(1)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))
}
