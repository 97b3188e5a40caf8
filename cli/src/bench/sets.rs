//! What a benchmark updates: one tensor of a given size, or the parameter tensors of a
//! model (GPT-2's 148, GPT-2 XL's 580), as torch's multi-tensor optimizers see them.

/// A named list of tensor lengths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSet {
    /// `2^20`, `gpt2`, …
    pub name: String,
    /// Elements of each tensor.
    pub lens: Vec<usize>,
}

/// The sets `--set` knows, besides `one` (a tensor of each size of the sweep).
pub const MODEL_SETS: [&str; 3] = ["gpt2", "gpt2-xl", "gpt2-mini"];

impl TensorSet {
    /// One tensor of `n` elements.
    pub fn one(n: usize) -> Self {
        let name = if n.is_power_of_two() { format!("2^{}", n.ilog2()) } else { n.to_string() };
        TensorSet { name, lens: vec![n] }
    }

    /// A model's parameter tensors: `gpt2` (124M, 148 tensors), `gpt2-xl` (1.56B, 580) or
    /// `gpt2-mini` (GPT-2's 148 tensors at width 64: 0.7M parameters, for quick checks).
    pub fn model(name: &str) -> Option<Self> {
        let shapes = match name {
            "gpt2" => gpt2_shapes(12, 768, 50257, 1024),
            "gpt2-xl" => gpt2_shapes(48, 1600, 50257, 1024),
            "gpt2-mini" => gpt2_shapes(12, 64, 1024, 128),
            _ => return None,
        };
        Some(TensorSet { name: name.into(), lens: shapes.iter().map(|s| s.iter().product()).collect() })
    }

    /// Elements over all tensors.
    pub fn total(&self) -> usize {
        self.lens.iter().sum()
    }
}

/// GPT-2's parameter shapes (tied embeddings): token and position embeddings, then per layer
/// ln_1 (w, b), attention qkv (w, b) and projection (w, b), ln_2 (w, b), MLP fc (w, b) and
/// projection (w, b), then ln_f (w, b): `2 + 12 · layers + 2` tensors.
pub fn gpt2_shapes(layers: usize, d: usize, vocab: usize, context: usize) -> Vec<Vec<usize>> {
    let mut s = vec![vec![vocab, d], vec![context, d]];
    for _ in 0..layers {
        s.extend([
            vec![d],
            vec![d],
            vec![d, 3 * d],
            vec![3 * d],
            vec![d, d],
            vec![d],
            vec![d],
            vec![d],
            vec![d, 4 * d],
            vec![4 * d],
            vec![4 * d, d],
            vec![d],
        ]);
    }
    s.extend([vec![d], vec![d]]);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpt2_sizes_are_the_published_ones() {
        let small = TensorSet::model("gpt2").unwrap();
        assert_eq!((small.lens.len(), small.total()), (148, 124_439_808));
        let xl = TensorSet::model("gpt2-xl").unwrap();
        assert_eq!((xl.lens.len(), xl.total()), (580, 1_557_611_200));
    }
}
