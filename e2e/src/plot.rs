//! PNG bar charts for the bench's results. Text is drawn with an embedded DejaVu font,
//! so charts render the same on any machine, with no system fonts.

use std::path::Path;

use anyhow::{Context, Result, anyhow};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use plotters::style::{FontStyle, register_font};

const FONT: &str = "sans-serif";

/// Draws `bars` (label, value) as horizontal bars, the first on top, on an axis in `unit`,
/// under `caption`.
pub fn bars(path: &Path, caption: &str, unit: &str, bars: &[(String, f64)]) -> Result<()> {
    if bars.is_empty() {
        return Err(anyhow!("nothing to chart"));
    }
    register_font(FONT, FontStyle::Normal, dejavu::sans::regular())
        .map_err(|_| anyhow!("the embedded font does not load"))?;
    let height = 120 + 50 * bars.len() as u32;
    let root = BitMapBackend::new(path, (960, height)).into_drawing_area();
    root.fill(&WHITE).map_err(plot_error)?;
    // Rows count from the bottom; bar i goes in row len-1-i (and back).
    let top_down = |i: usize| bars.len() - 1 - i;
    let longest = bars.iter().map(|(_, v)| *v).fold(0.0, f64::max);
    let x_max = if longest > 0.0 { longest * 1.2 } else { 1.0 };
    let mut chart = ChartBuilder::on(&root)
        .caption(caption, (FONT, 22))
        .margin(16)
        .x_label_area_size(40)
        .y_label_area_size(260)
        // `into_segmented` makes one segment per value of the range, its end included.
        .build_cartesian_2d(0.0..x_max, (0..bars.len() - 1).into_segmented())
        .map_err(plot_error)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .x_desc(unit)
        .label_style((FONT, 15))
        .y_label_formatter(&|v| match v {
            SegmentValue::CenterOf(row) => bars
                .get(top_down(*row))
                .map(|(l, _)| l.clone())
                .unwrap_or_default(),
            _ => String::new(),
        })
        .draw()
        .map_err(plot_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            let row = top_down(i);
            let mut bar = Rectangle::new(
                [
                    (0.0, SegmentValue::Exact(row)),
                    (*v, SegmentValue::Exact(row + 1)),
                ],
                BLUE.mix(0.6).filled(),
            );
            bar.set_margin(8, 8, 0, 0);
            bar
        }))
        .map_err(plot_error)?;
    chart
        .draw_series(bars.iter().enumerate().map(|(i, (_, v))| {
            Text::new(
                format!(" {v:.2}"),
                (*v, SegmentValue::CenterOf(top_down(i))),
                TextStyle::from((FONT, 15).into_font()).pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(plot_error)?;
    root.present()
        .with_context(|| format!("writing {}", path.display()))
}

/// plotters' drawing errors borrow the backend's error type; keep only the message.
fn plot_error<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("drawing the chart: {e}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_a_png_with_a_bar_per_value() {
        let dir = std::env::temp_dir().join(format!("chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bars.png");
        bars(
            &path,
            "100 KeeperSecrets",
            "seconds",
            &[("ready".into(), 1.5), ("raw".into(), 0.2)],
        )
        .unwrap();
        let png = std::fs::read(&path).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG file");
        // IHDR: width and height, big-endian, right after the signature and chunk header.
        assert_eq!(u32::from_be_bytes(png[16..20].try_into().unwrap()), 960);
        assert_eq!(u32::from_be_bytes(png[20..24].try_into().unwrap()), 220);
        bars(&path, "one", "seconds", &[("ready".into(), 1.0)]).unwrap();
        assert!(bars(&path, "empty", "seconds", &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
