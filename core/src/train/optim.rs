//! Optimizers over flat parameter slices: SGD with momentum and Adam (PyTorch's update rules,
//! weight decay as an L2 term added to the gradient), with a constant, cosine or step schedule.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `v = μ v + g; p -= lr v`
    Sgd { momentum: f32 },
    /// Kingma and Ba, with bias correction.
    Adam { beta1: f32, beta2: f32, eps: f32 },
}

impl Method {
    pub fn sgd() -> Method {
        Method::Sgd { momentum: 0.9 }
    }
    pub fn adam() -> Method {
        Method::Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    /// From the base rate down to 0 over the whole run, by half a cosine.
    Cosine,
    /// The rate times `gamma` every `every` epochs.
    Step { every: usize, gamma: f32 },
}

impl Schedule {
    /// The learning rate at `step` of `total` steps, in epoch `epoch`.
    pub fn rate(&self, base: f32, step: usize, total: usize, epoch: usize) -> f32 {
        match *self {
            Schedule::Constant => base,
            Schedule::Cosine => base * 0.5 * (1.0 + (std::f32::consts::PI * step as f32 / total.max(1) as f32).cos()),
            Schedule::Step { every, gamma } => base * gamma.powi((epoch / every.max(1)) as i32),
        }
    }
}

/// The state of one optimizer over a fixed list of parameter slices.
#[derive(Debug, Clone)]
pub struct Optimizer {
    pub method: Method,
    pub weight_decay: f32,
    /// Per slice: momentum (SGD) or first and second moments (Adam).
    m: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    t: i32,
}

impl Optimizer {
    pub fn new(method: Method, weight_decay: f32) -> Optimizer {
        Optimizer { method, weight_decay, m: Vec::new(), v: Vec::new(), t: 0 }
    }

    /// Starts a new step (Adam's bias correction counts steps).
    pub fn tick(&mut self) {
        self.t += 1;
    }

    /// Updates slice `i` (`p`) from its gradient `g` at rate `lr`; `decay` applies weight decay.
    pub fn update(&mut self, i: usize, p: &mut [f32], g: &[f32], lr: f32, decay: bool) {
        while self.m.len() <= i {
            self.m.push(Vec::new());
            self.v.push(Vec::new());
        }
        if self.m[i].len() != p.len() {
            self.m[i] = vec![0.0; p.len()];
            self.v[i] = vec![0.0; p.len()];
        }
        let wd = if decay { self.weight_decay } else { 0.0 };
        let (m, v) = (&mut self.m[i], &mut self.v[i]);
        match self.method {
            Method::Sgd { momentum } => {
                for ((p, &g), m) in p.iter_mut().zip(g).zip(m.iter_mut()) {
                    let g = g + wd * *p;
                    *m = momentum * *m + g;
                    *p -= lr * *m;
                }
            }
            Method::Adam { beta1, beta2, eps } => {
                let t = self.t.max(1);
                let (c1, c2) = (1.0 - beta1.powi(t), 1.0 - beta2.powi(t));
                for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
                    let g = g + wd * *p;
                    *m = beta1 * *m + (1.0 - beta1) * g;
                    *v = beta2 * *v + (1.0 - beta2) * g * g;
                    *p -= lr * (*m / c1) / ((*v / c2).sqrt() + eps);
                }
            }
        }
    }
}
