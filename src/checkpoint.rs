//! Optimizer checkpoints as safetensors files: every state tensor under torch's name
//! (`state.0.exp_avg`, …) and a JSON-valued metadata header (format, version, optimizer,
//! step, learning rate, configuration), so PyTorch users can read them. Saves are atomic:
//! written to a temporary file beside the target, flushed, then renamed over it.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::optim::Optimizer;

/// The `format` metadata value of this crate's checkpoints.
pub const FORMAT: &str = "wgpu-optim";
/// The checkpoint layout version this crate writes and reads.
pub const VERSION: u32 = 1;

/// What a checkpoint holds for one optimizer over one (flat) parameter tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Optimizer name (`"AdamW"`).
    pub optimizer: String,
    /// Shader family, which fixes the state layout (`"adam"`).
    pub family: String,
    /// Steps taken (torch's `state["step"]`).
    pub step: u64,
    /// Learning rate at the time of saving.
    pub lr: f64,
    /// The configuration, as its `Debug` text (for people; not parsed back).
    pub config: String,
    /// Parameters covered.
    pub len: usize,
    /// State tensors by torch name, in the optimizer's order.
    pub state: Vec<(String, Vec<f32>)>,
}

fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), message: message.into() }
}

impl Snapshot {
    pub(crate) fn of(o: &dyn Optimizer, step: u64, len: usize, state: Vec<(String, Vec<f32>)>) -> Self {
        Snapshot {
            optimizer: o.name().into(),
            family: o.kernel().family.into(),
            step,
            lr: o.lr(),
            config: format!("{o:?}"),
            len,
            state,
        }
    }

    /// Writes the snapshot to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let metadata: HashMap<String, String> = [
            ("format", FORMAT.to_string()),
            ("version", VERSION.to_string()),
            ("optimizer", self.optimizer.clone()),
            ("family", self.family.clone()),
            ("step", self.step.to_string()),
            ("lr", format!("{:e}", self.lr)),
            ("config", self.config.clone()),
            ("len", self.len.to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let views = self
            .state
            .iter()
            .map(|(name, data)| {
                let view = TensorView::new(Dtype::F32, vec![data.len()], bytemuck::cast_slice(data))
                    .map_err(|e| bad(path, e.to_string()))?;
                Ok((format!("state.0.{name}"), view))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| bad(path, e.to_string()))?;
        // A temporary name no other save (another thread's, another process's) can share.
        static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
        let write = || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        };
        write().map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            bad(path, format!("could not write: {e}"))
        })
    }

    /// Reads and checks a snapshot: the file must be a complete safetensors file of this
    /// format and version, with every tensor f32 and one-dimensional.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| bad(path, format!("could not read: {e}")))?;
        let file = SafeTensors::deserialize(&bytes).map_err(|e| bad(path, format!("not a safetensors file: {e}")))?;
        let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| bad(path, e.to_string()))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |key: &str| meta.get(key).ok_or_else(|| bad(path, format!("metadata lacks `{key}`")));
        if get("format")? != FORMAT {
            return Err(bad(path, format!("format is {:?}, not {FORMAT:?}", get("format")?)));
        }
        let version = get("version")?;
        if version != &VERSION.to_string() {
            return Err(bad(path, format!("version {version} is not the version {VERSION} this build reads")));
        }
        let number = |key: &str| -> Result<u64> {
            get(key)?.parse().map_err(|_| bad(path, format!("metadata `{key}` is not a number")))
        };
        let len = number("len")? as usize;
        let mut state = Vec::new();
        let mut names: Vec<&str> = file.names();
        names.sort();
        for name in names {
            let view = file.tensor(name).map_err(|e| bad(path, e.to_string()))?;
            if view.dtype() != Dtype::F32 || view.shape() != [len] {
                return Err(bad(path, format!("{name} is {:?} {:?}, not F32 [{len}]", view.dtype(), view.shape())));
            }
            let short = name.strip_prefix("state.0.").ok_or_else(|| bad(path, format!("unexpected tensor {name}")))?;
            let data: Vec<f32> =
                view.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            state.push((short.to_string(), data));
        }
        Ok(Snapshot {
            optimizer: get("optimizer")?.clone(),
            family: get("family")?.clone(),
            step: number("step")?,
            lr: get("lr")?.parse().map_err(|_| bad(path, "metadata `lr` is not a number"))?,
            config: get("config")?.clone(),
            len,
            state,
        })
    }

    /// Checks that this snapshot fits `o` over `len` parameters and returns its state in
    /// the optimizer's slot order (torch names).
    pub(crate) fn state_for(&self, path: &Path, o: &dyn Optimizer, len: usize) -> Result<Vec<Option<&[f32]>>> {
        if self.optimizer != o.name() || self.family != o.kernel().family {
            return Err(bad(path, format!("a checkpoint of {} cannot be loaded into {}", self.optimizer, o.name())));
        }
        if self.len != len {
            return Err(bad(path, format!("the checkpoint covers {} parameters, the optimizer {len}", self.len)));
        }
        o.kernel()
            .state
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let found = self.state.iter().find(|(n, _)| n == slot.torch_name).map(|(_, d)| d.as_slice());
                match (o.uses_state(i), found) {
                    (true, Some(d)) => Ok(Some(d)),
                    (false, None) => Ok(None),
                    (true, None) => Err(bad(path, format!("the checkpoint lacks {}", slot.torch_name))),
                    (false, Some(_)) => Err(bad(
                        path,
                        format!("the checkpoint has {}, which this configuration does not keep", slot.torch_name),
                    )),
                }
            })
            .collect()
    }
}
