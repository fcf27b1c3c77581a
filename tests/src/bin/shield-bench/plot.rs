//! PNG line plots with plotters' bitmap backend. plotters is built without
//! its font features (they pull in fontconfig and system fonts), so the
//! tick labels are drawn here from a 3×5 pixel font; the captions in
//! BENCHMARKS.md name the axes and the colours.

use std::path::Path;

use plotters::prelude::*;

pub const GREY: RGBColor = RGBColor(150, 150, 150);
pub const BLUE: RGBColor = RGBColor(31, 119, 180);
pub const RED: RGBColor = RGBColor(214, 39, 40);
pub const GREEN: RGBColor = RGBColor(44, 160, 44);

const W: i32 = 720;
const H: i32 = 420;
const LEFT: i32 = 60;
const RIGHT: i32 = 30;
const TOP: i32 = 20;
const BOTTOM: i32 = 40;

/// Rows of a 3-pixel-wide glyph, top to bottom, most significant bit left.
fn glyph(c: char) -> Option<[u8; 5]> {
    Some(match c {
        '0' => [7, 5, 5, 5, 7],
        '1' => [2, 6, 2, 2, 7],
        '2' => [7, 1, 7, 4, 7],
        '3' => [7, 1, 7, 1, 7],
        '4' => [5, 5, 7, 1, 1],
        '5' => [7, 4, 7, 1, 7],
        '6' => [7, 4, 7, 5, 7],
        '7' => [7, 1, 1, 1, 1],
        '8' => [7, 5, 7, 5, 7],
        '9' => [7, 5, 7, 1, 7],
        'k' => [4, 5, 6, 5, 5],
        'M' => [5, 7, 7, 5, 5],
        '.' => [0, 0, 0, 0, 2],
        _ => return None,
    })
}

/// Draws `text` with its top-left corner at (x, y), 2 pixels per dot.
fn label<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    text: &str,
    x: i32,
    y: i32,
) {
    let mut cx = x;
    for c in text.chars() {
        if let Some(rows) = glyph(c) {
            for (r, bits) in rows.iter().enumerate() {
                for col in 0..3 {
                    if bits & (4 >> col) != 0 {
                        let (px, py) = (cx + col * 2, y + r as i32 * 2);
                        let _ = area.draw(&Rectangle::new(
                            [(px, py), (px + 1, py + 1)],
                            BLACK.filled(),
                        ));
                    }
                }
            }
        }
        cx += 8;
    }
}

fn short(n: f64) -> String {
    crate::scaling::short(n as u32)
}

/// One plot: x on a log scale through the points' x values (each one a
/// tick), y linear from 0 with ticks at a round step.
pub fn draw(path: &Path, series: &[(RGBColor, Vec<(f64, f64)>)]) -> Result<(), String> {
    let xs: Vec<f64> = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.0))
        .collect();
    let ymax = series
        .iter()
        .flat_map(|(_, s)| s.iter().map(|p| p.1))
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
        label(&root, &text, LEFT - 10 - 8 * text.len() as i32, yy - 5);
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
        label(&root, &text, xx - 4 * text.len() as i32, H - BOTTOM + 10);
    }
    for (color, s) in series {
        let pts: Vec<(i32, i32)> = s
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
