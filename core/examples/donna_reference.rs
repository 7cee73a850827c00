//! Trains DONNA's digits reference: the largest choice in every block of
//! [`qplay_core::search::donna::Spec::digits`], on the digits training split with labels, seeded
//! and deterministic. Writes the ONNX model and a JSON record (accuracy on the test split, MACs,
//! parameters, settings).
//!
//! `cargo run --release -p qplay-core --example donna_reference -- assets/models/donna_digits_reference.onnx`

use qplay_core::eval::{Evaluator, Target};
use qplay_core::npy::read_npy;
use qplay_core::search::donna::{self, BlockChoice, Spec};
use qplay_core::train::{self, Data, Net, TrainConfig};
use qplay_core::{Limits, Tensor};

fn npy(name: &str) -> Tensor {
    let path = format!("{}/../assets/data/{name}", env!("CARGO_MANIFEST_DIR"));
    read_npy(&std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}")), 1 << 24).unwrap()
}

fn main() {
    let out = std::env::args().nth(1).unwrap_or_else(|| "assets/models/donna_digits_reference.onnx".into());
    let spec = Spec::digits();
    let choices = vec![BlockChoice::largest(); spec.slots.len()];
    let graph = donna::architecture(&spec, &choices, 0).unwrap();
    let (x, y) = (npy("digits_train_x.npy"), npy("digits_train_y.npy").to_i64_vec());
    let (tx, ty) = (npy("digits_test_x.npy"), npy("digits_test_y.npy").to_i64_vec());
    let ev = Evaluator { batches: vec![tx], target: Target::Labels(ty), limits: Limits::default() };
    let cfg = TrainConfig { epochs: 40, batch: 32, lr: 2e-3, weight_decay: 1e-4, seed: 0, ..Default::default() };
    let mut net = Net::new(graph, Limits::default()).unwrap();
    let (xd, shape) = (x.to_f32_vec(), x.shape()[1..].to_vec());
    let data = Data { x: &xd, sample_shape: &shape, labels: Some(&y), teacher: None };
    let report = train::train(&mut net, &data, &cfg, Some(&ev), &mut |p| {
        if let Some(e) = &p.finished {
            eprintln!("epoch {}: loss {:.4}, test accuracy {:.2} %", e.epoch + 1, e.loss, e.score.unwrap_or(f64::NAN));
        }
        true
    })
    .unwrap();
    let accuracy = report.epochs.last().and_then(|e| e.score).unwrap();
    let graph = net.into_graph();
    let (_, cost) = qplay_core::cost::analyze(&graph, &[], &Limits::default()).unwrap();
    std::fs::write(&out, qplay_core::onnx::export::fp32_model(&graph).unwrap()).unwrap();
    let record = serde_json::json!({
        "model": std::path::Path::new(&out).file_name().and_then(|f| f.to_str()),
        "space": spec,
        "blocks": choices.iter().map(BlockChoice::label).collect::<Vec<_>>(),
        "test_accuracy_pct": accuracy,
        "macs": cost.macs,
        "parameters": cost.params,
        "training": {"epochs": cfg.epochs, "batch": cfg.batch, "lr": cfg.lr, "weight_decay": cfg.weight_decay, "schedule": "cosine", "optimizer": "adam", "seed": cfg.seed, "seconds": report.seconds},
        "data": "scikit-learn digits (BSD-3-Clause), the split in assets/data",
        "licence": "the weights are produced by this script from that data; same licence as qplay",
    });
    std::fs::write(out.replace(".onnx", ".json"), serde_json::to_string_pretty(&record).unwrap() + "\n").unwrap();
    println!("{record}");
}
