//! The model zoo: the bundled models under four recipes, scored in the page on the bundled data
//! (as AIMET's model zoo table lists FP32 against quantized figures), each with the link that sets
//! it up in the page and the `qplay` commands that reproduce its figure.

use crate::bridge::{next_job, send};
use crate::components::fetch_body;
use crate::protocol::{QuantConfig, Request, Scheme};
use crate::state::{AppState, MODELS_DIR, SAMPLES};
use js_sys::{Array, Uint8Array};
use leptos::prelude::*;

/// Where the zoo's data lives (made by `assets/zoo/make_data.py`).
pub const ZOO_DIR: &str = "assets/zoo";

pub struct ZooModel {
    /// The bundled sample's id (see [`SAMPLES`]).
    pub sample: &'static str,
    pub task: &'static str,
    pub data: Data,
}

/// What a zoo model is calibrated and scored on.
pub enum Data {
    /// The first 256 training digits; the 450 test digits' accuracy. `flat`: the model reads
    /// them as rows of 64 ([N, 64]) rather than images ([N, 1, 8, 8]).
    Digits { flat: bool },
    /// Photos in `ZOO_DIR`: `calib` and `test` folders with their files (in name order, as the
    /// CLI reads a folder), prepared by the sample's settings; scored against FP32.
    Photos { calib: &'static str, test: &'static str, calib_files: &'static [&'static str], test_files: &'static [&'static str], what: &'static str },
}

const PHOTO_FILES: &[&str] = &["astronaut.png", "camera.png", "chelsea.png", "china.png", "coffee.png", "flower.png", "hubble_deep_field.png", "ihc.png", "retina.png", "rocket.png"];
const PAGES: &[&str] = &["000.png", "001.png", "002.png", "003.png", "004.png", "005.png", "006.png", "007.png", "008.png", "009.png", "010.png", "011.png", "012.png", "013.png", "014.png", "015.png"];

pub const MODELS: &[ZooModel] = &[
    ZooModel {
        sample: "efficientnet_lite0",
        task: "ImageNet classifier",
        data: Data::Photos { calib: "photos", test: "mirrored", calib_files: PHOTO_FILES, test_files: PHOTO_FILES, what: "calibrated on the 10 bundled photos, scored on their mirror images: output SQNR and top-1 agreement against FP32" },
    },
    ZooModel {
        sample: "text_detector",
        task: "text detection (dense)",
        data: Data::Photos { calib: "pages_calib", test: "pages_test", calib_files: PAGES.split_at(4).0, test_files: PAGES, what: "calibrated on 4 text pages, scored on 16 others: the map's SQNR and the IoU of the text regions (above 0.3) against FP32" },
    },
    ZooModel { sample: "digits_mobilenet", task: "digits, depthwise-separable CNN", data: Data::Digits { flat: false } },
    ZooModel { sample: "digits_mbconv", task: "digits, MBConv with squeeze-excite", data: Data::Digits { flat: false } },
    ZooModel { sample: "digits_mlp", task: "digits, MLP", data: Data::Digits { flat: true } },
];

impl ZooModel {
    fn sample(&self) -> Option<&'static crate::state::Sample> {
        SAMPLES.iter().find(|s| s.id == self.sample)
    }
    pub fn label(&self) -> &'static str {
        self.sample().map_or(self.sample, |s| s.label)
    }
    pub fn file(&self) -> &'static str {
        self.sample().map_or("", |s| s.file)
    }
    /// The sample's preprocessing JSON (ImageNet's settings for EfficientNet-Lite0).
    fn settings(&self) -> String {
        self.sample().and_then(|s| s.preprocess).map_or_else(|| format!("{}.json", self.sample), str::to_string)
    }
    pub fn photos(&self) -> bool {
        matches!(self.data, Data::Photos { .. })
    }
    pub fn describe(&self) -> &'static str {
        match self.data {
            Data::Photos { what, .. } => what,
            Data::Digits { .. } => "calibrated on the first 256 training digits, scored on the 450 test digits: accuracy",
        }
    }
    /// The metric's name for the table and the CSV.
    pub fn metric(&self) -> &'static str {
        if self.photos() {
            "SQNR vs FP32 (dB)"
        } else {
            "top-1 accuracy (%)"
        }
    }
}

pub struct Recipe {
    pub key: &'static str,
    pub label: &'static str,
    pub weight_bits: u32,
    pub per_channel: bool,
    pub dfq: bool,
    pub adaround: u32,
}

/// AdaRound's iterations per layer in the zoo (AIMET's default is 10,000; 200 keep
/// EfficientNet-Lite0's row to a minute or two in a tab).
pub const ADAROUND_ITERATIONS: u32 = 200;

pub const RECIPES: [Recipe; 4] = [
    Recipe { key: "w8a8", label: "W8A8 naive (per-tensor, min-max)", weight_bits: 8, per_channel: false, dfq: false, adaround: 0 },
    Recipe { key: "dfq", label: "W8A8 DFQ (cross-layer equalization)", weight_bits: 8, per_channel: false, dfq: true, adaround: 0 },
    Recipe { key: "pc", label: "W8A8 per-channel", weight_bits: 8, per_channel: true, dfq: false, adaround: 0 },
    Recipe { key: "w4a8-adaround", label: "W4A8 per-channel AdaRound", weight_bits: 4, per_channel: true, dfq: false, adaround: ADAROUND_ITERATIONS },
];

impl Recipe {
    pub fn config(&self) -> QuantConfig {
        QuantConfig {
            compressed: false,
            aimet_compatible: false,
            dfq: self.dfq,
            weight_bits: self.weight_bits,
            act_bits: 8,
            per_channel: self.per_channel,
            adaround_iterations: self.adaround,
            bias_correction: false,
            cle_measured: false,
            scheme: Scheme::MinMax,
            calib_samples: 0,
        }
    }

    /// The page's link with this model and recipe (the fragment the quantize panel starts from).
    pub fn link(&self, m: &ZooModel) -> String {
        let keys: Vec<String> = crate::url::recipe(&self.config()).iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("#model={}&{}", m.sample, keys.join("&"))
    }

    /// `qplay quantize`'s options for this recipe.
    fn flags(&self) -> String {
        let mut f = format!("--weight-bits {} --act-bits 8", self.weight_bits);
        if self.per_channel {
            f += " --per-channel";
        }
        if self.dfq {
            f += " --recipe dfq";
        }
        if self.adaround > 0 {
            f += &format!(" --recipe adaround --adaround-iters {}", self.adaround);
        }
        f
    }
}

/// The commands, from the repository's root, that print this row's figure.
pub fn commands(m: &ZooModel, r: &Recipe) -> String {
    let model = format!("{MODELS_DIR}/{}", m.file());
    let flags = r.flags();
    match m.data {
        Data::Photos { calib, test, .. } => {
            let pre = format!("--preprocess {MODELS_DIR}/{}", m.settings());
            format!(
                "qplay eval {model} --data {ZOO_DIR}/{test} {pre} --output fp32.npy\n\
                 qplay quantize {model} --calib {ZOO_DIR}/{calib} {pre} {flags} --encodings e.json --fp32-out t.onnx\n\
                 qplay eval t.onnx --data {ZOO_DIR}/{test} {pre} --encodings e.json --int8 --reference fp32.npy"
            )
        }
        Data::Digits { flat } => {
            let (flat, test) = if flat { ("_flat", format!("{ZOO_DIR}/digits_test_flat.npy")) } else { ("", "assets/data/digits_test_x.npy".to_string()) };
            format!(
                "qplay quantize {model} --calib {ZOO_DIR}/digits_calib{flat}.npy {flags} --encodings e.json --fp32-out t.onnx\n\
                 qplay eval t.onnx --data {test} --labels assets/data/digits_test_y.npy --encodings e.json --int8"
            )
        }
    }
}

/// Starts the zoo from its first model; the results replace the last ones as they arrive.
pub fn run(state: AppState) {
    state.zoo.set(Vec::new());
    next(state);
}

/// Sends the first model without a result yet, or ends the job.
pub fn next(state: AppState) {
    let i = state.zoo.get_untracked().len();
    let Some(m) = MODELS.get(i) else {
        state.idle();
        return;
    };
    state.start(format!("Model zoo: {} ({} of {})…", m.label(), i + 1, MODELS.len()));
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = send_model(state, m).await {
            state.fail(e);
        }
    });
}

/// True while the zoo is the running job (a Cancel during the downloads ends it).
pub fn running(state: AppState) -> bool {
    matches!(state.busy.get_untracked(), crate::state::Busy::Working(w) if w.starts_with("Model zoo"))
}

async fn send_model(state: AppState, m: &ZooModel) -> Result<(), String> {
    let bytes = Uint8Array::new(&fetch_body(&format!("{MODELS_DIR}/{}", m.file()), web_sys::Response::array_buffer).await?);
    let (calib_set, test_set) = (Array::new(), Array::new());
    let mut preprocess = None;
    if let Data::Photos { calib, test, calib_files, test_files, .. } = m.data {
        for (dir, names, set) in [(calib, calib_files, &calib_set), (test, test_files, &test_set)] {
            for name in names {
                set.push(&fetch_body(&format!("{ZOO_DIR}/{dir}/{name}"), web_sys::Response::blob).await?);
            }
        }
        preprocess = Some(fetch_body(&format!("{MODELS_DIR}/{}", m.settings()), web_sys::Response::text).await?.as_string().unwrap_or_default());
    }
    if !running(state) {
        return Ok(());
    }
    let recipes = RECIPES.iter().map(Recipe::config).collect();
    send(&Request::Zoo { job: next_job(), preprocess, recipes }, Array::of3(&bytes, &calib_set, &test_set).into())
}

/// The table as CSV: one line per model and recipe.
pub fn csv(results: &[crate::protocol::ZooResult]) -> String {
    let mut out = String::from("model,task,recipe,metric,fp32,quantized,top1_agreement_pct,iou,seconds,link\n");
    for (m, r) in MODELS.iter().zip(results) {
        for (recipe, q) in RECIPES.iter().zip(&r.recipes) {
            let (fp32, value) = figures(m, r.fp32, *q);
            let agree = q.top1_agree_pct.map_or(String::new(), |v| format!("{v:.2}"));
            let iou = q.iou.map_or(String::new(), |v| format!("{v:.4}"));
            let fields = [m.label().to_string(), m.task.into(), recipe.label.into(), m.metric().into(), fp32, value, agree, iou, format!("{:.1}", q.seconds), recipe.link(m)];
            out += &fields.iter().map(|f| if f.contains([',', '"']) { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() }).collect::<Vec<_>>().join(",");
            out.push('\n');
        }
    }
    out
}

/// The FP32 and quantized figures as the table shows them (as `qplay eval` prints them: two
/// decimals).
pub fn figures(m: &ZooModel, fp32: crate::protocol::ZooFigure, q: crate::protocol::ZooFigure) -> (String, String) {
    let f = |v: Option<f64>| v.map_or_else(|| "–".to_string(), |v| format!("{v:.2}"));
    if m.photos() {
        ("reference".into(), f(q.sqnr_db))
    } else {
        (f(fp32.accuracy_pct), f(q.accuracy_pct))
    }
}
