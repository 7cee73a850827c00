//! Messages between the page and the compute worker. Each message is a two-element JS array:
//! `[serde value of Request/Response, payload]`, where the payload is a `Uint8Array` (model
//! bytes), a `Blob` (a photo) or `undefined`, so large buffers are transferred, not serialised.

use serde::{Deserialize, Serialize};

const LITE0_PREPROCESS: &str = include_str!("../../assets/models/efficientnet_lite0.json");

/// The settings a photo is prepared with when the user gave none: EfficientNet-Lite0's, scaled to
/// the model's input size.
pub fn default_preprocess(height: usize, width: usize) -> Result<qplay_core::preprocess::Preprocess, String> {
    use qplay_core::preprocess::Preprocess;
    let p = Preprocess::from_json(LITE0_PREPROCESS).map_err(|e| e.to_string())?;
    Ok(if p.size() == [height, width] { p } else { Preprocess::imagenet_like(height, width) })
}

/// Page -> worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Request {
    /// Payload: the .onnx bytes.
    Load { job: u32, name: String },
    /// Payload: the encoded photo (PNG/JPEG/...) as a Blob; the worker decodes it.
    Classify { job: u32 },
    /// Run the loaded digits model over the bundled digits test set.
    EvalDigits { job: u32 },
    /// Fold BN, calibrate min-max encodings (AIMET semantics) and prepare the integer engine.
    /// Image models calibrate on the bundled photos (`photos`, fetched by the worker) and their
    /// mirror images; digits models on the first 256 training digits.
    Quantize { job: u32, config: QuantConfig, photos: Vec<String> },
    /// Time `runs` inferences of FP32 and (if quantized) INT8 on the last classified input.
    Speed { job: u32, runs: u32 },
    /// The last quantization as ONNX: QDQ (`qdq`) or the transformed FP32 model.
    Export { job: u32, qdq: bool },
    /// The histogram of one quantized activation over a few calibration samples.
    Histogram { job: u32, tensor: String },
    /// The user's preprocessing settings (the JSON `qplay --preprocess` reads, from file `file`)
    /// for the loaded image model: photos are then prepared this way for classification and
    /// calibration.
    SetPreprocess { job: u32, file: String, json: String },
    /// Runs FP32 (and INT8, once quantized) over the user's test data. Payload: an array of
    /// Files: photos (labelled by a `labels.csv` among them, their folder or their names, with
    /// `classes` the model's class names) or `.npy` tensors of samples.
    EvalSet { job: u32, classes: Option<Vec<String>> },
    /// Compress the loaded model (payload: the user's calibration files, as for Quantize); the
    /// bundled photos or training digits otherwise.
    Compress { job: u32, settings: CompressSettings, photos: Vec<String> },
    /// The last compressed model as ONNX (answered with Exported and the bytes).
    ExportCompressed { job: u32 },
    /// Quantization-aware training, or fine-tuning of the compressed model by distillation from
    /// the loaded one. Payload: an array of three arrays of Files: the calibration files (as for
    /// Quantize), the user's training files and test files (photos labelled as for EvalSet, or
    /// `.npy` samples with an integer `.npy` of labels; `classes` the model's class names). No
    /// training files: the bundled digits or the calibration photos (`photos` as for Quantize).
    Train { job: u32, settings: TrainSettings, photos: Vec<String>, classes: Option<Vec<String>> },
    /// Mixed precision of the loaded model: the whole Pareto curve (payload: the user's
    /// calibration files, as for Quantize; the bundled photos or training digits otherwise).
    Mixed { job: u32, settings: MixedSettings, photos: Vec<String> },
    /// Makes point `index` of the last curve the current quantization (its downloads), and times
    /// it against FP32 here.
    ApplyMixed { job: u32, index: usize },
    /// DONNA's architecture search on the digits space. Payload: an array of the reference
    /// model's bytes and the last SearchBuilt blob (or undefined). Steps A–B are reused from the
    /// last search, or from that blob, when their settings match.
    Search { job: u32, settings: SearchSettings },
    /// Model `index` of the last search's finetuned models: downloaded (answered with Exported),
    /// or sent back to be loaded as the current model (answered with SearchModel).
    SearchModel { job: u32, index: usize, load: bool },
    /// One model of the zoo: its FP32 figure and each recipe's on the bundled data, the loaded
    /// model left as it is. Payload: an array [the .onnx bytes, calibration Files, test Files]
    /// (photos, prepared by `preprocess`, the settings JSON); without `preprocess` the model takes
    /// digits (the first 256 training digits calibrate, the test digits score).
    Zoo { job: u32, preprocess: Option<String>, recipes: Vec<QuantConfig> },
    /// The pool's size: `workers` in all (0: one per core). Answered with Pool.
    Workers { job: u32, workers: u32 },
    /// To a helper worker: calibration statistics over some samples (`qplay_core::quant::calib`).
    /// Payload: the message array's entries 1 and 2, the graph as ONNX bytes and the samples as
    /// one Float32Array (`shapes`). Answered with HelpCalibrated.
    HelpCalibrate { job: u32, watched: Vec<String>, scheme: Scheme, ranges: Option<Vec<Option<(f64, f64)>>>, shapes: Vec<Vec<usize>> },
    /// To a helper worker: the loaded model's FP32 or INT8 outputs (the first output) on some
    /// inputs. Payload: entry 1, the inputs as one Float32Array (`shapes`); entry 2,
    /// when the helper's copy of that model is not version `stamp`, the graph as ONNX bytes
    /// (with `state`, the simulation's `SimState` as JSON, for INT8). Answered with HelpRan.
    HelpRun { job: u32, int8: bool, stamp: u32, shapes: Vec<Vec<usize>>, state: Option<String> },
    /// To a helper: rows `rows` of compression's sensitivity table, for the model (ONNX bytes),
    /// calibration samples and evaluation photos that follow as one Uint8Array and two
    /// Float32Arrays (`shapes`, `probe_shapes`). Answered with HelpCompressed.
    HelpCompress { job: u32, settings: CompressSettings, kind: InputKind, rows: (usize, usize), shapes: Vec<Vec<usize>>, probe_shapes: Vec<Vec<usize>> },
}

/// An architecture search as the page asks for it (see `qplay search`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchSettings {
    /// "latency-int8", "latency-fp32" or "macs".
    pub objective: String,
    pub library: usize,
    pub architectures: usize,
    pub bkd_epochs: usize,
    pub finetune_epochs: usize,
    pub final_epochs: usize,
    pub final_models: usize,
    pub population: usize,
    pub generations: usize,
    pub seed: u64,
    /// Train the reference at a quarter of its width as a baseline (with `finetune`).
    pub baseline: bool,
    /// Step D: finetune and measure points of the front (else the search stops at step C, in
    /// seconds once steps A–B are kept).
    #[serde(default = "yes")]
    pub finetune: bool,
    /// A latency table the user imported (JSON, as exported), used instead of measuring one.
    #[serde(default)]
    pub latency_table: Option<String>,
}

fn yes() -> bool {
    true
}

/// A block of the library.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchBlock {
    pub block: usize,
    pub choice: String,
    pub nsr: f64,
    pub macs: u64,
    /// Its time in this browser (the search's engine).
    pub ms: f64,
}

/// A model measured on the digits test split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchModel {
    pub arch: Vec<String>,
    pub predicted_accuracy: Option<f64>,
    pub accuracy: f64,
    pub latency_ms: f64,
    pub predicted_ms: Option<f64>,
    pub macs: u64,
}

/// A point of the searched front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchPoint {
    pub arch: Vec<String>,
    pub predicted_accuracy: f64,
    /// Milliseconds predicted by the latency table, or MACs.
    pub cost: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SearchResult {
    pub settings: SearchSettings,
    /// Steps A–B came from the previous search.
    pub reused: bool,
    /// "ms" or "MACs": the front's cost.
    pub unit: String,
    /// "int8" or "fp32": the engine every latency here was measured with.
    pub engine: String,
    pub space_size: String,
    pub library: Vec<SearchBlock>,
    pub tau: f64,
    pub summed_tau: f64,
    /// (leave-one-out predicted, measured) validation accuracy of each library architecture.
    pub predictor: Vec<(f64, f64)>,
    pub front: Vec<SearchPoint>,
    pub evaluations: usize,
    pub models: Vec<SearchModel>,
    pub reference: SearchModel,
    pub baselines: Vec<SearchModel>,
    /// Seconds per step: library, architectures, latency table, search, finetuning, baselines.
    pub seconds: Vec<(String, f64)>,
    /// The latency table used, as JSON (to export), and whether it was imported.
    pub latency_table: String,
    pub table_imported: bool,
}

/// A mixed-precision search as the page asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedSettings {
    /// As `wXaY`.
    pub candidates: Vec<String>,
    pub per_channel: bool,
    /// Moves measured per step of phase 2.
    pub lookahead: u32,
    /// "bops" (a budget relative to uniform W8A8), "drop" (a score drop), "size" (MB of weights)
    /// or "latency" (milliseconds in this browser's integer engine).
    pub objective: String,
    pub budget: f64,
    /// Calibration samples (0: the default set).
    pub calib_samples: u32,
    /// AdaRound iterations per layer for the candidates below 8 weight bits (0: nearest).
    #[serde(default)]
    pub adaround_iterations: u32,
}

/// One point of a mixed-precision curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedPoint {
    pub relative_bops: f64,
    pub score: f64,
    pub weight_bytes: u64,
    /// Milliseconds per inference predicted by the latency table measured in this browser.
    pub latency_ms: f64,
    /// Per weighted layer, in graph order: (weight bits, activation bits).
    pub bits: Vec<(u8, u8)>,
}

/// The outcome of a mixed-precision search.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedResult {
    pub settings: MixedSettings,
    /// "%" (accuracy on the digits test split) or "dB" (SQNR against FP32's outputs).
    pub unit: String,
    pub fp32_score: Option<f64>,
    /// The weighted layers in graph order: (name, MACs per sample).
    pub layers: Vec<(String, u64)>,
    pub groups: usize,
    /// The non-dominated points, cheapest first.
    pub pareto: Vec<MixedPoint>,
    /// (relative BOPs, score, predicted milliseconds) of every point measured.
    pub visited: Vec<(f64, f64, f64)>,
    /// Each candidate everywhere: (candidate, relative BOPs, score, predicted milliseconds).
    pub uniform: Vec<(String, f64, f64, f64)>,
    /// Per candidate (as `uniform`): one inference timed whole, to check its predicted
    /// milliseconds (the sum of its groups' times) against.
    pub uniform_whole_ms: Vec<f64>,
    /// The point of `pareto` that meets the budget.
    pub chosen: usize,
    /// Why no point meets the budget (then `chosen` is the nearest end of the curve).
    pub budget_note: Option<String>,
    pub fp32_bytes: u64,
    pub evaluations: usize,
    pub eval_samples: usize,
    pub seconds: f64,
}

/// A point of the curve made the current quantization, and timed here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixedApplied {
    pub index: usize,
    pub point: MixedPoint,
    /// Median milliseconds of one inference: FP32, and the mixed model.
    pub fp32_ms: f64,
    pub mixed_ms: f64,
    pub top1_agreement: f64,
    /// As in CompressResult: (FP32, mixed).
    pub compare: Vec<(Vec<Prediction>, Vec<Prediction>)>,
    pub class_accuracy: Vec<(f64, f64)>,
    /// The point's encodings (AIMET's JSON format, a bit-width per tensor).
    pub encodings_json: String,
}

/// A training run as the page asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    /// QAT of the loaded model (else: fine-tune the compressed model, distilled from the loaded one).
    pub qat: bool,
    pub weight_bits: u32,
    pub act_bits: u32,
    pub per_channel: bool,
    /// QAT: keep BatchNormalization (batch statistics; re-estimated, then folded) instead of
    /// folding it first.
    #[serde(default)]
    pub keep_bn: bool,
    pub epochs: u32,
    pub lr: f32,
    pub batch: u32,
    /// Calibration / training samples (0: the default set).
    pub samples: u32,
}

/// One finished epoch: its mean loss and the score after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainEpoch {
    pub epoch: usize,
    pub loss: f64,
    pub score: Option<f64>,
    /// The score's unit, as in TrainResult.
    pub unit: String,
}

/// What a training run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainResult {
    pub settings: TrainSettings,
    /// "%" (accuracy against labels) or "dB" (output SQNR against the FP32 model).
    pub unit: String,
    /// The score before training: the min-max quantized model (QAT) or the compressed one.
    pub before: f64,
    /// The score after it (QAT: the quantization simulation with the learned encodings).
    pub after: f64,
    /// The FP32 model's score (digits) or None (SQNR is measured against it).
    pub fp32: Option<f64>,
    pub epochs: Vec<TrainEpoch>,
    pub samples: usize,
    /// What it trained and was scored on (and where the labels came from).
    pub data: String,
    pub seconds: f64,
    /// "finished", or why it stopped early.
    pub stop: String,
    /// QAT: the learned encodings (AIMET's JSON format).
    pub encodings_json: Option<String>,
}

/// A quantization recipe as the page offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantConfig {
    /// Quantize the last compressed model instead of the loaded one.
    #[serde(default)]
    pub compressed: bool,
    /// Quantizer placement exactly as AIMET's default config (else qplay's).
    pub aimet_compatible: bool,
    /// Data-free quantization first: cross-layer equalization (function-preserving in qplay
    /// mode, AIMET's equalize_model in AIMET-compatible mode).
    pub dfq: bool,
    pub weight_bits: u32,
    pub act_bits: u32,
    pub per_channel: bool,
    /// AdaRound iterations per layer (0: round to nearest).
    pub adaround_iterations: u32,
    /// Analytical (data-free) bias correction from the folded BatchNorms' statistics.
    pub bias_correction: bool,
    /// With DFQ in qplay mode: equalize each layer set only where it measurably helps.
    pub cle_measured: bool,
    /// How activation ranges are chosen from the calibration data.
    pub scheme: Scheme,
    /// Calibration samples to use (0: all of them).
    pub calib_samples: u32,
}

/// Calibration schemes offered by the page (see `qplay_core::quant::CalibScheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Scheme {
    /// Minimum and maximum seen (AIMET "tf").
    #[default]
    MinMax,
    /// The range whose quantization noise is smallest on a histogram (AIMET "tf_enhanced").
    Sqnr,
    /// The 99.99th percentile at each end, averaged over batches.
    Percentile,
}

impl Scheme {
    pub const ALL: [Scheme; 3] = [Scheme::MinMax, Scheme::Sqnr, Scheme::Percentile];
    /// Short name, used in the URL and the select.
    pub fn key(self) -> &'static str {
        match self {
            Scheme::MinMax => "minmax",
            Scheme::Sqnr => "sqnr",
            Scheme::Percentile => "p99.99",
        }
    }
    pub fn from_key(k: &str) -> Option<Scheme> {
        Scheme::ALL.into_iter().find(|s| s.key() == k)
    }
    pub fn label(self) -> &'static str {
        match self {
            Scheme::MinMax => "min-max",
            Scheme::Sqnr => "SQNR search (tf-enhanced)",
            Scheme::Percentile => "99.99th percentile",
        }
    }
    pub fn core(self) -> qplay_core::quant::CalibScheme {
        match self {
            Scheme::MinMax => qplay_core::quant::CalibScheme::MinMax,
            Scheme::Sqnr => qplay_core::quant::CalibScheme::Sqnr,
            Scheme::Percentile => qplay_core::quant::CalibScheme::Percentile(99.99),
        }
    }
}

impl QuantConfig {
    /// A short human-readable name, e.g. "W8A8 per-tensor + DFQ".
    pub fn label(&self) -> String {
        format!(
            "{}W{}A{} {}{}{}{}{}{}",
            if self.compressed { "compressed, " } else { "" },
            self.weight_bits,
            self.act_bits,
            if self.per_channel { "per-channel" } else { "per-tensor" },
            if self.dfq && self.cle_measured && !self.aimet_compatible { " + DFQ (measured per set)" } else if self.dfq { " + DFQ" } else { "" },
            if self.bias_correction { " + bias correction" } else { "" },
            if self.adaround_iterations > 0 { format!(" + AdaRound ({} iterations)", self.adaround_iterations) } else { String::new() },
            if self.scheme == Scheme::MinMax { String::new() } else { format!(", {}", self.scheme.label()) },
            if self.aimet_compatible { " (AIMET-compatible)" } else { "" }
        )
    }
}

/// Worker -> page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Response {
    Ready,
    Loaded { job: u32, summary: ModelSummary },
    Classified { job: u32, result: Classification },
    DigitsEvaluated { job: u32, result: DigitsEval },
    /// Progress of a long job: `done` of `total` steps of `stage`.
    Progress { job: u32, stage: String, done: usize, total: usize },
    Quantized { job: u32, report: QuantReport },
    Speed { job: u32, result: SpeedResult },
    /// Payload: the file's bytes.
    Exported { job: u32, file_name: String },
    Histogram { job: u32, result: qplay_core::quant::analysis::ActivationHistogram },
    /// The settings were accepted: the model's input is now `height` x `width`; `json` is
    /// them written out in full.
    PreprocessSet { job: u32, file: String, height: usize, width: usize, json: String },
    SetEvaluated { job: u32, result: SetEval },
    Compressed { job: u32, result: CompressResult },
    /// An epoch of the running training ended (for the live curves).
    TrainEpoch { job: u32, epoch: TrainEpoch },
    Trained { job: u32, result: TrainResult },
    Mixed { job: u32, result: MixedResult },
    MixedApplied { job: u32, applied: MixedApplied },
    Zoo { job: u32, result: ZooResult },
    Searched { job: u32, result: SearchResult },
    /// Steps A–B of the running search are done. Payload: them packed, for the page to keep
    /// (a cancel replaces the worker; the next search starts from them).
    SearchBuilt { job: u32 },
    /// Payload: the model's bytes, to load as the current model.
    SearchModel { job: u32, name: String },
    Failed { job: u32, message: String },
    /// The pool's size in use (this worker and its helpers).
    Pool { job: u32, workers: usize },
    /// A helper's calibration part. Payload: a Float64Array (`calib::Part::to_f64s`).
    HelpCalibrated { job: u32 },
    /// A helper's rows of the sensitivity table (`scores[layer][ratio]`).
    HelpCompressed { job: u32, scores: Vec<Vec<f64>> },
    /// A helper's outputs. Payload: one Float32Array holding them end to end (`shapes`).
    HelpRan { job: u32, shapes: Vec<Vec<usize>> },
    /// Sent by the worker's panic hook just before the worker dies.
    Panicked { message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantReport {
    pub config: QuantConfig,
    pub bn_folded: usize,
    pub calibration_samples: usize,
    /// Wall time of calibration (the first, before any bias correction) and the workers it
    /// split over.
    #[serde(default)]
    pub calibration_seconds: f64,
    #[serde(default)]
    pub workers: usize,
    pub weight_encodings: usize,
    pub activation_encodings: usize,
    /// Steps of the integer engine that run in integers / fall back to float.
    pub integer_steps: usize,
    pub float_steps: usize,
    pub seconds: f64,
    /// AIMET-format (1.0.0) encodings, for download.
    pub encodings_json: String,
    /// SQNR of every quantized activation against FP32 on a few calibration samples, in graph
    /// order.
    pub layers: Vec<LayerRow>,
    /// SQNR of the model's (first) output among `layers`, when that output is quantized.
    pub output_sqnr_db: Option<f64>,
    pub analysis_samples: usize,
    /// With DFQ: per-output-channel weight ranges of each equalized convolution, before and after.
    pub cle: Vec<CleLayer>,
    /// With AdaRound: what it did to each layer.
    pub adaround: Vec<AdaroundLayer>,
    /// With measured equalization: each layer set's output SQNR with and without equalizing it.
    pub cle_choices: Vec<CleChoice>,
    /// With bias correction: the number of layers corrected.
    pub bias_corrected: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdaroundLayer {
    pub node: String,
    pub weights: usize,
    /// Weights rounded the other way than to nearest.
    pub changed: usize,
    /// The layer's output reconstruction loss with nearest rounding and with AdaRound.
    pub recon_nearest: f32,
    pub recon_adaround: f32,
    /// (iteration, reconstruction loss, rounding regulariser), about 100 points.
    pub curve: Vec<(usize, f32, f32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleLayer {
    pub node: String,
    pub before_min: Vec<f32>,
    pub before_max: Vec<f32>,
    pub after_min: Vec<f32>,
    pub after_max: Vec<f32>,
}

/// One layer set of measured equalization.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CleChoice {
    pub layers: Vec<String>,
    pub equalized: bool,
    pub with_db: f64,
    pub without_db: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LayerRow {
    pub name: String,
    pub op: String,
    pub bits: u8,
    pub min: f32,
    pub max: f32,
    /// dB; `None` when there was no error at all.
    pub sqnr_db: Option<f64>,
}

/// Latency in this browser, single thread (the worker), after one warm-up run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeedResult {
    pub runs: u32,
    /// (median, p90) milliseconds.
    pub fp32: (f64, f64),
    pub int8: Option<(f64, f64)>,
    /// Which build of the engine ran: "relaxed SIMD" or "SIMD128".
    pub simd: String,
}

/// The quantized model's answer next to the FP32 one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantOutput {
    pub top5: Vec<Prediction>,
    pub infer_ms: f64,
    /// Logits SQNR against FP32, dB.
    pub sqnr_db: f64,
}

/// What kind of input the loaded model takes, as far as the playground can feed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InputKind {
    /// NCHW RGB image of this size.
    Image { height: usize, width: usize },
    /// The 8x8 digits ([N,1,8,8] or [N,64]).
    Digits,
    /// Anything else: summary only.
    Other,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoDesc {
    pub name: String,
    pub elem_type: String,
    pub shape: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub name: String,
    pub file_bytes: usize,
    pub ir_version: i64,
    pub opset: i64,
    pub producer: String,
    pub inputs: Vec<IoDesc>,
    pub outputs: Vec<IoDesc>,
    pub op_counts: Vec<(String, usize)>,
    pub parameters: usize,
    pub input_kind: InputKind,
    pub load_ms: f64,
    /// The cost model (None when an input's shape is not fixed).
    pub macs: Option<u64>,
    /// Per layer with MACs or parameters: (name, op, MACs, parameters).
    pub layer_costs: Vec<(String, String, u64, u64)>,
    /// Every node of the file, for the graph view.
    pub graph: Vec<GraphNode>,
}

/// A node of the model file as the graph view draws it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    pub name: String,
    pub op: String,
    /// Names of the values it reads and writes.
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    /// Each output's shape as text ("?" when not known).
    pub shapes: Vec<String>,
    pub macs: Option<u64>,
    /// Min and max of its weight.
    pub weight_range: Option<(f32, f32)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    pub class: usize,
    pub prob: f32,
    pub logit: f32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub top5: Vec<Prediction>,
    /// Inference time in the worker (preprocessing excluded).
    pub infer_ms: f64,
    pub preprocess_ms: f64,
    pub image_width: u32,
    pub image_height: u32,
    /// Present once the model is quantized: the integer engine's result on the same input.
    pub int8: Option<QuantOutput>,
    /// For a model whose output is a map (then `top5` is empty): the maps drawn.
    pub map: Option<MapResult>,
}

/// A map output (detector heatmap, class scores per pixel, image), FP32 and INT8 drawn alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapResult {
    pub kind: qplay_core::mapview::MapKind,
    pub shape: qplay_core::mapview::MapShape,
    pub fp32: qplay_core::mapview::Drawing,
    /// Heatmaps: the fraction of FP32 pixels above the threshold.
    pub fp32_above: Option<f64>,
    pub int8: Option<MapInt8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MapInt8 {
    pub drawing: qplay_core::mapview::Drawing,
    /// |FP32 - INT8|, the largest difference at full intensity.
    pub difference: qplay_core::mapview::Drawing,
    pub max_difference: f32,
    pub metrics: qplay_core::mapview::MapMetrics,
    pub above: Option<f64>,
}

/// One zoo model's figures, scored as `qplay eval` scores them: accuracy where the test set has
/// labels, else the pooled SQNR of the outputs and their top-1 agreement against FP32.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ZooResult {
    pub samples: usize,
    pub fp32: ZooFigure,
    /// One per recipe asked for, in order.
    pub recipes: Vec<ZooFigure>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ZooFigure {
    pub accuracy_pct: Option<f64>,
    /// Against FP32 (none for FP32 itself).
    pub sqnr_db: Option<f64>,
    pub top1_agree_pct: Option<f64>,
    /// Maps: the IoU of the output and FP32 maps above the settings' threshold, pooled.
    pub iou: Option<f64>,
    /// The recipe's time here (quantization and scoring).
    pub seconds: f64,
}

/// The user's test set through the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetEval {
    pub samples: usize,
    /// Where the labels came from (`None`: no labels, so no accuracy).
    pub labels_from: Option<String>,
    /// Correctly classified samples (with labels).
    pub fp32_correct: Option<usize>,
    pub fp32_ms: f64,
    pub int8: Option<SetEvalInt8>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetEvalInt8 {
    pub correct: Option<usize>,
    /// Classifiers: samples whose top-1 is FP32's.
    pub same_top1: Option<usize>,
    /// Pooled SQNR of all outputs against FP32, dB.
    pub sqnr_db: f64,
    /// Heatmaps: the mean IoU of the thresholded maps against FP32.
    pub mean_iou: Option<f64>,
    pub ms: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DigitsEval {
    pub n: usize,
    pub correct: usize,
    pub infer_ms: f64,
    /// (true label, predicted) of the first samples, for display.
    pub samples: Vec<(u8, usize)>,
    /// Integer engine: correct count, time, logits SQNR vs FP32.
    pub int8: Option<(usize, f64, f64)>,
}

/// A compression run as the page asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressSettings {
    /// "spatial-svd", "weight-svd" or "channel-pruning".
    pub method: String,
    /// Share of the MACs to keep.
    pub target: f64,
    /// N: candidate ratios k/N, k = 1..N-1.
    pub candidates: u32,
    /// Calibration samples for the pruning's reconstruction (0: all).
    pub calib_samples: u32,
}

/// One layer of a compression: its row of the sensitivity table and what was chosen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressLayer {
    pub name: String,
    pub ratio: Option<f64>,
    /// Rank or input channels kept, of `of`.
    pub kept: usize,
    pub of: usize,
    pub macs_before: u64,
    pub macs_after: u64,
    /// The model's score with only this layer compressed, per candidate ratio.
    pub scores: Vec<f64>,
}

/// A compression's outcome, with the latency of both models measured in this browser.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompressResult {
    pub method: String,
    pub target: f64,
    /// "%" (accuracy on the digits test split) or "dB" (SQNR against the original's outputs).
    pub unit: String,
    pub baseline: f64,
    pub score: f64,
    /// The score of AIMET's greedy selection before qplay's refinement.
    pub selection_score: f64,
    pub macs_before: u64,
    pub macs_after: u64,
    pub params_before: u64,
    pub params_after: u64,
    pub ratios: Vec<f64>,
    pub layers: Vec<CompressLayer>,
    /// (MAC ratio, score, kept) of each model the refinement measured.
    pub trials: Vec<(f64, f64, bool)>,
    /// (MAC ratio, score) of the uniform baseline: every layer at one ratio.
    pub uniform: Option<(f64, f64)>,
    /// (model ratio) of the greedy selection.
    pub selection_ratio: f64,
    pub evaluations: usize,
    pub eval_samples: usize,
    pub points: Option<usize>,
    pub seconds: f64,
    /// Workers the sensitivity table was scored on (this one and its helpers).
    pub workers: usize,
    /// Median milliseconds of one inference: (original, compressed), FP32 and INT8 (W8A8).
    pub fp32_ms: (f64, f64),
    pub int8_ms: (f64, f64),
    /// Top-1 agreement of the compressed model with the original on the evaluation samples.
    pub top1_agreement: f64,
    /// A classifier's top 3 on each evaluation photo (up to 8): (original, compressed).
    pub compare: Vec<(Vec<Prediction>, Vec<Prediction>)>,
    /// Digits: accuracy in % per class on the test split, (original, compressed).
    pub class_accuracy: Vec<(f64, f64)>,
}
