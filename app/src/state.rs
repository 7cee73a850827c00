//! Page state shared by the components (all signals are `Copy`).

use crate::protocol::{Classification, CompressResult, DigitsEval, MixedApplied, MixedResult, ModelSummary, QuantReport, SearchResult, SetEval, SpeedResult, TrainEpoch, TrainResult, ZooResult};
use leptos::prelude::*;

/// A bundled sample model.
pub struct Sample {
    pub id: &'static str,
    pub label: &'static str,
    pub file: &'static str,
    pub blurb: &'static str,
    /// Its input settings (a preprocessing JSON in MODELS_DIR), sent after it loads; none: the
    /// ImageNet settings (or digits).
    pub preprocess: Option<&'static str>,
}

pub const SAMPLES: &[Sample] = &[
    Sample { id: "efficientnet_lite0", label: "EfficientNet-Lite0", file: "efficientnet_lite0.onnx", blurb: "ImageNet classifier, 4.7 M parameters, 18.8 MB", preprocess: None },
    Sample { id: "digits_mobilenet", label: "Digits MobileNet", file: "digits_mobilenet.onnx", blurb: "8x8 digits, depthwise-separable CNN, 9 k parameters", preprocess: None },
    Sample { id: "digits_mlp", label: "Digits MLP", file: "digits_mlp.onnx", blurb: "8x8 digits, 64-32-10 MLP, 2.4 k parameters", preprocess: None },
    Sample { id: "digits_mbconv", label: "Digits MBConv", file: "donna_digits_reference.onnx", blurb: "8x8 digits, 3 MBConv blocks with squeeze-excite and h-swish (the search's reference), 516 k parameters", preprocess: None },
    Sample { id: "text_detector", label: "Text detector", file: "text_detector.onnx", blurb: "PaddleOCR's DBNet (PP-OCRv4), a text probability map, 256x256 BGR, 4.7 MB", preprocess: Some("text_detector.json") },
];

/// A bundled photo: file name and a short description.
pub const PHOTOS: &[(&str, &str)] = &[
    ("chelsea.png", "cat"),
    ("coffee.png", "coffee cup"),
    ("camera.png", "man with a camera"),
    ("rocket.jpg", "rocket launch"),
    ("china.jpg", "temple"),
    ("flower.jpg", "flower"),
    ("astronaut.png", "astronaut"),
    ("retina.jpg", "retina"),
    ("hubble_deep_field.jpg", "deep field"),
    ("ihc.png", "microscopy"),
];

#[derive(Clone, Debug, PartialEq)]
pub enum Busy {
    Idle,
    Working(String),
}

#[derive(Clone, Copy)]
pub struct AppState {
    pub busy: RwSignal<Busy>,
    pub error: RwSignal<Option<String>>,
    pub summary: RwSignal<Option<ModelSummary>>,
    pub classification: RwSignal<Option<(String, Classification)>>,
    pub digits: RwSignal<Option<DigitsEval>>,
    pub labels: RwSignal<Vec<String>>,
    pub worker_ready: RwSignal<bool>,
    /// Name of the photo being classified (for the result heading).
    pub pending_photo: RwSignal<String>,
    /// The quantization of the loaded model, once done.
    pub quant: RwSignal<Option<QuantReport>>,
    /// The quantization before it (same model), for side-by-side comparison.
    pub previous_quant: RwSignal<Option<QuantReport>>,
    /// The activation histogram last asked for.
    pub histogram: RwSignal<Option<qplay_core::quant::analysis::ActivationHistogram>>,
    /// Progress of the running long job: (stage, done, total, estimated seconds left).
    pub progress: RwSignal<Option<(String, usize, usize, Option<f64>)>>,
    /// A notice (not an error), e.g. after a cancel.
    pub notice: RwSignal<Option<String>>,
    pub speed: RwSignal<Option<SpeedResult>>,
    /// The user's class names for the loaded model: (file name, names).
    pub user_labels: RwSignal<Option<(String, Vec<String>)>>,
    /// The user's preprocessing settings in force: (where from, input height, width, the JSON).
    pub preprocess: RwSignal<Option<(String, usize, usize, String)>>,
    /// How many calibration files of their own the user gave, and whether .npy are among them.
    pub calibration_photos: RwSignal<Option<(usize, bool)>>,
    /// How many training files the user gave (the Train section's data), if any.
    pub train_files: RwSignal<Option<usize>>,
    /// The user's test set through the model: (how many files, the result).
    pub set_eval: RwSignal<Option<(usize, SetEval)>>,
    /// The last compression of the loaded model.
    pub compress: RwSignal<Option<CompressResult>>,
    /// The last mixed-precision search, and the point applied from it.
    pub mixed: RwSignal<Option<MixedResult>>,
    pub mixed_applied: RwSignal<Option<MixedApplied>>,
    /// The model zoo's figures, one per model in `zoo::MODELS` order, as they arrive.
    pub zoo: RwSignal<Vec<ZooResult>>,
    /// The last architecture search.
    pub search: RwSignal<Option<SearchResult>>,
    /// Quantize the compressed model (step 7's result) rather than the loaded one.
    pub quantize_compressed: RwSignal<bool>,
    /// The last training run, and the epochs of the running (or last) one as they end.
    pub train: RwSignal<Option<TrainResult>>,
    pub train_curve: RwSignal<Vec<TrainEpoch>>,
}

impl AppState {
    pub fn new() -> Self {
        AppState {
            busy: RwSignal::new(Busy::Idle),
            error: RwSignal::new(None),
            summary: RwSignal::new(None),
            classification: RwSignal::new(None),
            digits: RwSignal::new(None),
            labels: RwSignal::new(Vec::new()),
            worker_ready: RwSignal::new(false),
            pending_photo: RwSignal::new(String::new()),
            quant: RwSignal::new(None),
            previous_quant: RwSignal::new(None),
            histogram: RwSignal::new(None),
            progress: RwSignal::new(None),
            notice: RwSignal::new(None),
            speed: RwSignal::new(None),
            user_labels: RwSignal::new(None),
            preprocess: RwSignal::new(None),
            calibration_photos: RwSignal::new(None),
            train_files: RwSignal::new(None),
            set_eval: RwSignal::new(None),
            compress: RwSignal::new(None),
            mixed: RwSignal::new(None),
            mixed_applied: RwSignal::new(None),
            zoo: RwSignal::new(Vec::new()),
            search: RwSignal::new(None),
            quantize_compressed: RwSignal::new(false),
            train: RwSignal::new(None),
            train_curve: RwSignal::new(Vec::new()),
        }
    }
    /// Class `i`'s name: the user's labels; else ImageNet's names for a 1000-class model; else
    /// the index.
    pub fn class_name(&self, i: usize) -> String {
        self.user_labels
            .with(|u| u.as_ref().and_then(|(_, l)| l.get(i).cloned()))
            .or_else(|| self.labels.with(|l| if l.len() == 1000 && self.user_labels.with(Option::is_none) { l.get(i).cloned() } else { None }))
            .unwrap_or_else(|| format!("class {i}"))
    }
    pub fn fail(&self, msg: impl Into<String>) {
        self.error.set(Some(msg.into()));
        self.idle();
    }
    pub fn start(&self, what: impl Into<String>) {
        self.error.set(None);
        self.notice.set(None);
        self.busy.set(Busy::Working(what.into()));
    }
    pub fn idle(&self) {
        self.busy.set(Busy::Idle);
        self.progress.set(None);
    }
}

impl Default for AppState {
    fn default() -> Self {
        Self::new()
    }
}

/// Where trunk puts the bundled models and photos (relative to the page).
pub const MODELS_DIR: &str = "assets/models";
pub const PHOTOS_DIR: &str = "assets/images";
