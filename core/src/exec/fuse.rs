//! Load-time fusions of the FP32 executor (numerically equivalent up to float rounding):
//! - Conv -> BatchNormalization is folded by the BN-folding pass ([`crate::passes::bn_fold`]);
//! - Conv -> Relu / Clip(constant scalar bounds) becomes a Conv whose output is clamped in place.
//!
//! Only applied where the intermediate tensor has no other reader and is not a graph output.

use super::activation_bounds;
use crate::graph::{Graph, Op, ValueId};

/// Index of the node that reads `value`, when it is the only reader.
fn sole_reader(g: &Graph, readers: &[usize], value: ValueId) -> Option<usize> {
    if readers[value] != 1 {
        return None;
    }
    g.nodes.iter().position(|n| n.inputs.iter().flatten().any(|&i| i == value))
}

/// Fuses Relu and constant-bound Clip into the Conv that feeds them; returns the clamp of each
/// remaining node.
pub(crate) fn fuse_activations(g: &mut Graph) -> Vec<Option<(f32, f32)>> {
    let mut clamps: Vec<Option<(f32, f32)>> = Vec::new();
    let mut i = 0;
    while i < g.nodes.len() {
        let mut clamp = None;
        if matches!(g.nodes[i].op, Op::Conv { .. }) && g.nodes[i].outputs.len() == 1 {
            let readers = g.reader_counts();
            if let Some(ai) = sole_reader(g, &readers, g.nodes[i].outputs[0]) {
                let scalar = activation_bounds(g, &g.nodes[ai], 1).filter(|(lo, hi)| lo.len() == 1 && hi.len() == 1);
                if let (Some((lo, hi)), 1) = (scalar, g.nodes[ai].outputs.len()) {
                    clamp = Some((lo[0], hi[0]));
                    let out = g.nodes[ai].outputs[0];
                    g.nodes[i].outputs = vec![out];
                    g.nodes.remove(ai);
                }
            }
        }
        clamps.push(clamp);
        i += 1;
    }
    clamps
}
