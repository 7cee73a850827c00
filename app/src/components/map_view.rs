//! A model's output map (detector heatmap, per-pixel classes, image): FP32, INT8 and where they
//! differ, drawn alike, with the metric that fits the kind of map.

use crate::protocol::{Classification, MapResult};
use leptos::prelude::*;
use qplay_core::mapview::{Drawing, MapKind};
use wasm_bindgen::JsCast;

/// A drawing as a PNG data URL (through a canvas; empty if the browser refuses).
fn data_url(d: &Drawing) -> String {
    let draw = || -> Option<String> {
        let doc = web_sys::window()?.document()?;
        let canvas: web_sys::HtmlCanvasElement = doc.create_element("canvas").ok()?.unchecked_into();
        canvas.set_width(d.width as u32);
        canvas.set_height(d.height as u32);
        let ctx: web_sys::CanvasRenderingContext2d = canvas.get_context("2d").ok()??.unchecked_into();
        let img = web_sys::ImageData::new_with_u8_clamped_array_and_sh(wasm_bindgen::Clamped(&d.rgba), d.width as u32, d.height as u32).ok()?;
        ctx.put_image_data(&img, 0.0, 0.0).ok()?;
        canvas.to_data_url().ok()
    };
    draw().unwrap_or_default()
}

fn pct(f: Option<f64>) -> String {
    f.map(|f| format!("{:.1} %", 100.0 * f)).unwrap_or_default()
}

/// What a map's pixels mean, for its caption.
fn legend(kind: MapKind) -> String {
    match kind {
        MapKind::Heat { threshold } => format!("dark: low, yellow: high; pixels above {threshold}:"),
        MapKind::Classes { classes } => format!("the best of {classes} classes per pixel"),
        MapKind::Image => "the output image".into(),
    }
}

#[component]
pub fn MapView(name: String, result: Classification, map: MapResult) -> impl IntoView {
    let s = map.shape;
    let int8 = map.int8.clone().map(|q| {
        let m = &q.metrics;
        let mut parts = Vec::new();
        if let (Some(iou), MapKind::Heat { threshold }) = (m.iou, map.kind) {
            parts.push(format!("IoU of the maps above {threshold}: {iou:.3}"));
        }
        if let (Some(a), Some(miou)) = (m.pixel_agreement, m.miou) {
            parts.push(format!("same class on {:.1} % of pixels, mIoU {miou:.3}", 100.0 * a));
        }
        if let Some(p) = m.psnr_db {
            parts.push(format!("PSNR {p:.1} dB"));
        }
        parts.push(m.sqnr_db.map_or("identical values".into(), |d| format!("SQNR {d:.1} dB")));
        let ms = result.int8.as_ref().map_or(0.0, |i| i.infer_ms);
        view! {
            <figure>
                <img data-testid="output-map" data-engine="int8" data-above=q.above.map(|a| format!("{a:.5}")) src=data_url(&q.drawing) alt="INT8 output map"/>
                <figcaption>"INT8 (integer engine), "{format!("{ms:.1} ms")}<br/>{legend(map.kind)}" "{pct(q.above)}</figcaption>
            </figure>
            <figure>
                <img data-testid="output-diff" src=data_url(&q.difference) alt="Where INT8 differs from FP32"/>
                <figcaption>{match map.kind {
                    MapKind::Classes { .. } => "red: pixels whose class differs".to_string(),
                    _ => format!("|FP32 − INT8|, full red = {:.3}", q.max_difference),
                }}</figcaption>
            </figure>
            <p class="map-metric" data-testid="map-metric" data-iou=m.iou.map(|v| format!("{v:.5}")) data-sqnr=m.sqnr_db.map(|v| format!("{v:.3}"))>
                "INT8 against FP32: "{parts.join(" · ")}
            </p>
        }
    });
    view! {
        <section class="panel results" data-testid="results" aria-labelledby="res-h">
            <h2 id="res-h"><span class="step">"5"</span>"Output map for "{name}</h2>
            <p class="hint">{format!("The model's output is a map of {} channel(s), {}x{} pixels.", s.channels, s.height, s.width)}</p>
            <div class="maps">
                <figure>
                    <img data-testid="output-map" data-engine="fp32" data-above=map.fp32_above.map(|a| format!("{a:.5}")) src=data_url(&map.fp32) alt="FP32 output map"/>
                    <figcaption>"FP32, "{format!("{:.1} ms", result.infer_ms)}<br/>{legend(map.kind)}" "{pct(map.fp32_above)}</figcaption>
                </figure>
                {int8}
            </div>
            <p class="timing" data-testid="infer-ms">
                {format!("preprocessing {:.1} ms (image {}x{}), in the worker", result.preprocess_ms, result.image_width, result.image_height)}
            </p>
        </section>
    }
}
