//! A minimal JS surface over qplay-core for benchmarking under Node: load a model, run it.

use qplay_core::{load_model, Executor, Limits, Tensor};
use wasm_bindgen::prelude::*;

#[wasm_bindgen]
pub struct Session {
    exec: Executor,
}

#[wasm_bindgen]
impl Session {
    /// Loads an ONNX model from its bytes.
    #[wasm_bindgen(constructor)]
    pub fn new(bytes: &[u8]) -> Result<Session, JsError> {
        let (g, _) = load_model(bytes, &Limits::default()).map_err(|e| JsError::new(&e.to_string()))?;
        let exec = Executor::new(g, Limits::default()).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(Session { exec })
    }

    /// Runs the model on one f32 input of the given shape; returns the first output's data.
    pub fn run(&mut self, input: &[f32], shape: &[u32]) -> Result<Vec<f32>, JsError> {
        let shape = shape.iter().map(|&d| d as usize).collect();
        let x = Tensor::f32(shape, input.to_vec()).map_err(|e| JsError::new(&e.to_string()))?;
        let y = self.exec.run(vec![x]).map_err(|e| JsError::new(&e.to_string()))?;
        Ok(y.into_iter().next().map(|t| t.to_f32_vec()).unwrap_or_default())
    }
}
