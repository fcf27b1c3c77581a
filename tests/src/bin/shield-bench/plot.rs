//! PNG line plots with plotters' bitmap backend. plotters is built without
//! its font features (they pull in fontconfig and system fonts), so text is
//! drawn here from the public-domain 8×8 bitmap font of the font8x8 crate:
//! each plot carries its title, both axis names and a legend naming every
//! colour.

use std::path::Path;

use plotters::prelude::*;

pub const GREY: RGBColor = RGBColor(150, 150, 150);
pub const BLUE: RGBColor = RGBColor(31, 119, 180);
pub const RED: RGBColor = RGBColor(214, 39, 40);
pub const GREEN: RGBColor = RGBColor(44, 160, 44);

const W: i32 = 980;
const H: i32 = 460;
const LEFT: i32 = 70;
/// The legend's column, right of the plot area.
const LEGEND: i32 = 290;
const RIGHT: i32 = LEGEND + 30;
const TOP: i32 = 60;
const BOTTOM: i32 = 56;

/// One line of a plot.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: RGBColor,
    pub points: Vec<(f64, f64)>,
}

/// What a plot says about itself.
pub struct Plot<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub series: &'a [Series<'a>],
}

/// Draws `text` with its top-left corner at (x, y), `scale` pixels per
/// dot of the 8×8 font (ASCII; anything else is a blank).
fn label<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    x: i32,
    y: i32,
    scale: i32,
) {
    let mut cx = x;
    for c in text.chars() {
        let rows = font8x8::legacy::BASIC_LEGACY
            .get(c as usize)
            .copied()
            .unwrap_or([0; 8]);
        for (r, bits) in rows.iter().enumerate() {
            for col in 0..8 {
                // Bit 0 is the leftmost dot.
                if bits & (1 << col) != 0 {
                    let (px, py) = (cx + col * scale, y + r as i32 * scale);
                    for dy in 0..scale {
                        for dx in 0..scale {
                            let _ = area.draw_pixel((px + dx, py + dy), &BLACK);
                        }
                    }
                }
            }
        }
        cx += 8 * scale;
    }
}

/// The width of `text` in pixels at `scale`.
fn width(text: &str, scale: i32) -> i32 {
    text.chars().count() as i32 * 8 * scale
}

fn short(n: f64) -> String {
    crate::scaling::short(n as u32)
}

/// One plot: x on a log scale through the points' x values (each one a
/// tick), y linear from 0 with ticks at a round step; the title above, the
/// axis names at their axes, the legend on the right.
pub fn draw(path: &Path, plot: &Plot<'_>) -> Result<(), String> {
    let series = plot.series;
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .collect();
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .filter(|y| y.is_finite())
        .fold(0.0, f64::max);
    if xs.is_empty() || ymax <= 0.0 {
        return Err("nothing to plot".into());
    }
    let (x0, x1) = (
        xs.iter().copied().fold(f64::INFINITY, f64::min).log10(),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max).log10(),
    );
    let step = [1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0]
        .into_iter()
        .find(|s| ymax / s <= 8.0)
        .unwrap_or(1000.0);
    let ytop = (ymax / step).ceil() * step;
    let px = |x: f64| {
        LEFT + (((x.log10() - x0) / (x1 - x0).max(1e-9)) * f64::from(W - LEFT - RIGHT)) as i32
    };
    let py = |y: f64| H - BOTTOM - ((y / ytop) * f64::from(H - TOP - BOTTOM)) as i32;

    let root = BitMapBackend::new(path, (W as u32, H as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let axis = BLACK.stroke_width(1);
    let e = |r: Result<(), _>| r.map_err(|e: DrawingAreaErrorKind<_>| e.to_string());
    e(root.draw(&PathElement::new(
        vec![(LEFT, TOP), (LEFT, H - BOTTOM), (W - RIGHT, H - BOTTOM)],
        axis,
    )))?;
    let mut y = 0.0;
    while y <= ytop + 1e-9 {
        let yy = py(y);
        e(root.draw(&PathElement::new(
            vec![(LEFT - 4, yy), (W - RIGHT, yy)],
            RGBColor(225, 225, 225).stroke_width(1),
        )))?;
        let text = if step < 1.0 {
            format!("{y:.1}")
        } else {
            format!("{y:.0}")
        };
        label(&root, &text, LEFT - 10 - width(&text, 1), yy - 4, 1);
        y += step;
    }
    let mut ticks: Vec<f64> = xs.clone();
    ticks.sort_by(f64::total_cmp);
    ticks.dedup();
    for &x in &ticks {
        let xx = px(x);
        e(root.draw(&PathElement::new(
            vec![(xx, H - BOTTOM), (xx, H - BOTTOM + 4)],
            axis,
        )))?;
        let text = short(x);
        label(&root, &text, xx - width(&text, 1) / 2, H - BOTTOM + 10, 1);
    }
    label(&root, plot.title, (W - width(plot.title, 2)) / 2, 12, 2);
    label(&root, plot.y_label, LEFT - 40, TOP - 18, 1);
    let plot_mid = LEFT + (W - RIGHT - LEFT) / 2;
    label(
        &root,
        plot.x_label,
        plot_mid - width(plot.x_label, 1) / 2,
        H - BOTTOM + 32,
        1,
    );
    for (i, s) in series.iter().enumerate() {
        let (lx, ly) = (W - LEGEND, TOP + 10 + 22 * i as i32);
        e(root.draw(&PathElement::new(
            vec![(lx, ly + 4), (lx + 24, ly + 4)],
            s.color.stroke_width(2),
        )))?;
        e(root.draw(&Circle::new((lx + 12, ly + 4), 3, s.color.filled())))?;
        label(&root, s.name, lx + 32, ly, 1);
    }
    for s in series {
        let color = s.color;
        let pts: Vec<(i32, i32)> = s
            .points
            .iter()
            .filter(|p| p.1.is_finite())
            .map(|&(x, y)| (px(x), py(y)))
            .collect();
        e(root.draw(&PathElement::new(pts.clone(), color.stroke_width(2))))?;
        for p in pts {
            e(root.draw(&Circle::new(p, 3, color.filled())))?;
        }
    }
    root.present().map_err(|e| e.to_string())
}
