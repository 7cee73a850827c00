//! Two recipes side by side: the previous quantization of the loaded model and the current one.

use crate::protocol::QuantReport;
use crate::state::AppState;
use leptos::prelude::*;

/// The figures compared, as (row label, value of a report).
fn rows() -> Vec<(&'static str, fn(&QuantReport) -> String)> {
    fn db(v: Option<f64>) -> String {
        v.map_or("∞".into(), |d| format!("{d:.1} dB"))
    }
    fn finite(r: &QuantReport) -> Vec<f64> {
        r.layers.iter().filter_map(|l| l.sqnr_db).collect()
    }
    vec![
        ("model output SQNR", |r| r.output_sqnr_db.map_or("not quantized".into(), |d| db(d.is_finite().then_some(d)))),
        ("worst tensor", |r| db(finite(r).into_iter().reduce(f64::min))),
        ("median tensor", |r| {
            let mut v = finite(r);
            v.sort_by(f64::total_cmp);
            db(v.get(v.len() / 2).copied())
        }),
        ("tensors under 10 dB", |r| format!("{} of {}", r.layers.iter().filter(|l| l.sqnr_db.is_some_and(|d| d < 10.0)).count(), r.layers.len())),
        ("calibration samples", |r| r.calibration_samples.to_string()),
        ("steps in integers", |r| format!("{} of {}", r.integer_steps, r.integer_steps + r.float_steps)),
        ("time", |r| format!("{:.1} s", r.seconds)),
    ]
}

#[component]
pub fn RecipeCompare() -> impl IntoView {
    let state = expect_context::<AppState>();
    move || {
        let (prev, cur) = (state.previous_quant.get()?, state.quant.get()?);
        Some(view! {
            <div class="compare" data-testid="recipe-compare">
                <h3>"Previous recipe vs this one"</h3>
                <p class="explain">"Measured the same way on the same calibration samples; quantize again with another recipe to compare it with this one."</p>
                <div class="table-wrap">
                    <table>
                        <thead><tr><th scope="col"></th><th scope="col">{prev.config.label()}</th><th scope="col">{cur.config.label()}</th></tr></thead>
                        <tbody>
                            {rows().into_iter().map(|(label, f)| view! {
                                <tr><th scope="row">{label}</th><td class="num">{f(&prev)}</td><td class="num" data-testid=format!("compare-{}", label.replace(' ', "-"))>{f(&cur)}</td></tr>
                            }).collect_view()}
                        </tbody>
                    </table>
                </div>
            </div>
        })
    }
}
