//! Optimizer checkpoints as safetensors files, laid out as torch's optimizer `state_dict`:
//! one tensor per parameter tensor and state (`state.0.exp_avg`, `state.1.exp_avg`, …,
//! numbered across groups as torch numbers parameters) and a JSON metadata header with the
//! format, the version, the parameter groups (optimizer, configuration, learning rate, step,
//! parameter indices and lengths, schedule position) and GradScaler's state, so PyTorch
//! users can read them. Saves are atomic: written to a temporary file beside the target,
//! flushed, then renamed over it.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{SafeTensors, TensorView};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::format::{ElementFormat, HostTensor};
use crate::optim::Optimizer;
use crate::precision::{MASTER, Precision};

/// The `format` metadata value of this crate's checkpoints.
pub const FORMAT: &str = "wgpu-optim";
/// The checkpoint layout version this crate writes and reads (3: with a checksum).
pub const VERSION: u32 = 3;

/// The metadata keys of a checkpoint; any other is refused.
const KEYS: [&str; 5] = ["checksum", "format", "param_groups", "scaler", "version"];

/// CRC-32 over the metadata but `checksum`, by key, then every tensor by name — name, dtype,
/// shape and data, each entry ended by a zero byte — as `crc32:xxxxxxxx`. Every bit of the
/// file that carries meaning is covered; scripts/checkpoint_torch.py computes the same.
fn checksum<'a>(
    metadata: &HashMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, String, &'a [usize], &'a [u8])>,
) -> String {
    let mut h = crc32fast::Hasher::new();
    let mut field = |bytes: &[u8]| {
        h.update(bytes);
        h.update(&[0]);
    };
    let mut keys: Vec<&String> = metadata.keys().filter(|k| *k != "checksum").collect();
    keys.sort();
    for k in keys {
        field(k.as_bytes());
        field(metadata[k].as_bytes());
    }
    let mut tensors: Vec<_> = tensors.collect();
    tensors.sort_by(|a, b| a.0.cmp(b.0));
    for (name, dtype, shape, data) in tensors {
        field(name.as_bytes());
        field(dtype.as_bytes());
        field(shape.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(",").as_bytes());
        field(data);
    }
    format!("crc32:{:08x}", h.finalize())
}

/// What a checkpoint holds: every parameter group, and the loss scaler's state.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The groups, in order.
    pub groups: Vec<GroupSnapshot>,
    /// torch.amp.GradScaler's state, when the gradient control has a dynamic loss scale.
    pub scaler: Option<ScalerState>,
}

/// One parameter group's optimizer state.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupSnapshot {
    /// Optimizer name (`"AdamW"`).
    pub optimizer: String,
    /// Shader family, which fixes the state layout (`"adam"`).
    pub family: String,
    /// Steps taken (torch's `state["step"]`).
    pub step: u64,
    /// Learning rate at the time of saving.
    pub lr: f64,
    /// The configuration with every hyper-parameter, as structured data
    /// ([`Optimizer::config`]).
    pub config: Value,
    /// Where the learning-rate schedule stands, when one drives the group.
    pub schedule: Option<SchedulePosition>,
    /// The shape of each parameter tensor of the group (`[len]` for a flat one).
    pub shapes: Vec<Vec<usize>>,
    /// State by torch name, in the optimizer's order, over the group's tensors end to end.
    pub state: Vec<StateSnapshot>,
    /// Per-parameter scalars by torch name, the same for every tensor of the group: torch's
    /// `step` (as f32, as torch keeps it) and [`Optimizer::scalar_state`].
    pub scalars: Vec<(String, f32)>,
    /// How the steps stored the parameters (with master weights, `state` holds
    /// `master_param`; under stochastic rounding the seed is the run's).
    pub precision: Precision,
}

/// One state of a group: its torch name, its data over the group's tensors end to end (in
/// its element format, stored as that format's safetensors dtype), and each tensor's share
/// ([`Optimizer::state_len`]: the parameter's length, or another for a shaped step; 0 where
/// a tensor keeps none, and the file then has no tensor for it).
#[derive(Clone, Debug, PartialEq)]
pub struct StateSnapshot {
    /// torch's name (`exp_avg`).
    pub name: String,
    /// The data.
    pub data: HostTensor,
    /// Elements per parameter tensor.
    pub lens: Vec<usize>,
}

impl GroupSnapshot {
    /// Length of each parameter tensor.
    pub fn lens(&self) -> Vec<usize> {
        self.shapes.iter().map(|s| s.iter().product()).collect()
    }
}

/// A schedule's position: which schedule (its structured configuration), the learning rate it scales
/// (torch's `initial_lr`) and the step it started after.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulePosition {
    /// The schedule, as structured data ([`Schedule::config`](crate::schedule::Schedule::config)).
    pub schedule: Value,
    /// The learning rate the schedule scales.
    pub base_lr: f64,
    /// The step count when the schedule was set.
    pub start_step: u64,
}

/// torch.amp.GradScaler's state.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScalerState {
    /// The current loss scale.
    pub scale: f32,
    /// Finite steps since the scale last changed.
    pub growth_tracker: u32,
    /// The configured growth (checked on load: it is configuration, not state).
    pub growth: crate::clip::ScalerGrowth,
}

/// The saved loss scaler, checked against the configured one (its growth is configuration,
/// not state): both absent, or both present with the same growth.
pub(crate) fn check_scaler(
    path: &Path,
    saved: Option<ScalerState>,
    configured: Option<crate::clip::ScalerGrowth>,
) -> Result<Option<ScalerState>> {
    match (saved, configured) {
        (None, None) => Ok(None),
        (Some(s), Some(growth)) if s.growth == growth => Ok(Some(s)),
        (Some(s), Some(growth)) => {
            Err(bad(path, format!("saved with scaler growth {:?}, configured {growth:?}", s.growth)))
        }
        (Some(_), None) => {
            Err(bad(path, "saved with a dynamic loss scale: set_grad_control with a scaler before loading"))
        }
        (None, Some(_)) => Err(bad(path, "saved without a dynamic loss scale, which is configured")),
    }
}

pub(crate) use crate::schedule::ScheduleSlot;

/// What a checked group snapshot restores into an optimizer.
pub(crate) struct Restore<'a> {
    /// State data per slot of the optimizer's kernel (`None` for unused slots), in the slot's
    /// format.
    pub state: Vec<Option<&'a HostTensor>>,
    /// The master weights, where the steps keep them.
    pub master: Option<&'a HostTensor>,
    /// The configuration with the saved learning rate.
    pub optimizer: Box<dyn Optimizer>,
    pub step: u64,
    /// The schedule's saved base learning rate and start step.
    pub schedule: Option<(f64, u64)>,
}

/// The optimizer's per-parameter scalars ([`Optimizer::scalar_state`]), by name.
pub(crate) fn scalars_of(own: Vec<(&'static str, f32)>) -> Vec<(String, f32)> {
    let mut all: Vec<(String, f32)> = own.into_iter().map(|(n, v)| (n.to_string(), v)).collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Puts a schedule back where it stood: its base learning rate and start step as saved.
pub(crate) fn resume_schedule(slot: &mut ScheduleSlot, saved: Option<(f64, u64)>) {
    if let (Some((_, base, start)), Some((b, s))) = (slot, saved) {
        (*base, *start) = (b, s);
    }
}

/// One tensor of a file being written: name, format, shape, bytes (borrowed from the state,
/// or made for the file: 8-bit codes and absmax).
type FileTensor<'a> = (String, ElementFormat, Vec<usize>, std::borrow::Cow<'a, [u8]>);

/// Bytes a state of `format` keeps for a tensor of `len` elements on the host (the GPU's
/// layout): [`ElementFormat::state_bytes_of`].
fn stored_bytes(format: ElementFormat, len: usize) -> usize {
    format.state_bytes_of(len as u64) as usize
}

pub(crate) fn bad(path: &Path, message: impl Into<String>) -> Error {
    Error::Checkpoint { path: path.display().to_string(), message: message.into() }
}

impl GroupSnapshot {
    /// A group of `o` over tensors of `shapes` with `state` (torch name, data over the
    /// tensors end to end) for every slot the configuration keeps.
    pub(crate) fn of(
        o: &dyn Optimizer,
        step: u64,
        shapes: Vec<Vec<usize>>,
        state: Vec<(&'static crate::optim::StateSlot, HostTensor)>,
        schedule: &ScheduleSlot,
        precision: Precision,
    ) -> Self {
        let state = state
            .into_iter()
            .map(|(slot, data)| {
                // The master weights are laid out as the parameters; a state slot as its optimizer says.
                let lens = match o.kernel().state.iter().position(|s| std::ptr::eq(s, slot)) {
                    Some(i) => shapes.iter().map(|shape| o.state_len(i, shape)).collect(),
                    None => shapes.iter().map(|shape| shape.iter().product()).collect(),
                };
                StateSnapshot { name: slot.torch_name.to_string(), data, lens }
            })
            .collect();
        GroupSnapshot {
            optimizer: o.name().into(),
            family: o.kernel().family.into(),
            step,
            lr: o.lr(),
            config: o.config(),
            schedule: schedule.as_ref().map(|(s, base, start)| SchedulePosition {
                schedule: s.config(),
                base_lr: *base,
                start_step: *start,
            }),
            shapes,
            state,
            scalars: scalars_of(o.scalar_state(step)),
            precision,
        }
    }

    /// Checks that this group fits `o` over tensors of `shapes` with `schedule`, and
    /// returns what to restore. Nothing is changed.
    pub(crate) fn restore(
        &self,
        path: &Path,
        o: &dyn Optimizer,
        shapes: &[Vec<usize>],
        schedule: &ScheduleSlot,
        precision: Precision,
    ) -> Result<Restore<'_>> {
        let schedule_slot = schedule;
        if self.optimizer != o.name() || self.family != o.kernel().family {
            return Err(bad(path, format!("a checkpoint of {} cannot be loaded into {}", self.optimizer, o.name())));
        }
        if self.precision != precision {
            return Err(bad(
                path,
                format!(
                    "the checkpoint's steps stored the parameters with {:?}, this optimizer's with {precision:?}: \
                     build it with the saved precision (with_precision) before loading",
                    self.precision
                ),
            ));
        }
        if self.shapes != shapes {
            return Err(bad(
                path,
                format!("the checkpoint's tensors have shapes {:?}, the optimizer's {shapes:?}", self.shapes),
            ));
        }
        let schedule = match (&self.schedule, schedule) {
            (None, None) => None,
            (Some(saved), Some((current, _, _))) if saved.schedule == current.config() => {
                Some((saved.base_lr, saved.start_step))
            }
            (Some(saved), Some((current, _, _))) => {
                return Err(bad(path, format!("saved with schedule {}, not {}", saved.schedule, current.config())));
            }
            (Some(saved), None) => {
                return Err(bad(
                    path,
                    format!("saved with schedule {}: set the same schedule before loading", saved.schedule),
                ));
            }
            (None, Some(_)) => {
                return Err(bad(path, "saved without a schedule: load first, then set the schedule"));
            }
        };
        // The saved learning rate, and the momentum the schedule gave the last step taken
        // where it cycles one: what a run that never stopped holds.
        let mut next = o.clone_box();
        next.set_lr(self.lr);
        if let (Some((current, _, _)), Some((_, start))) = (schedule_slot, schedule)
            && self.step > start
            && let Some(m) = current.momentum(self.step - 1 - start)
        {
            next.set_momentum(m);
        }
        next.validate()?;
        if next.config() != self.config {
            return Err(bad(
                path,
                format!(
                    "the checkpoint was saved with {}, this optimizer is {}: build it with the saved \
                     hyper-parameters (`reconfigure` after loading changes them)",
                    self.config,
                    next.config()
                ),
            ));
        }
        let slots = o.kernel().state;
        let master = self.state.iter().find(|s| s.name == MASTER.torch_name);
        let kept_master = precision == Precision::MasterWeights;
        let known =
            |name: &str| slots.iter().any(|slot| slot.torch_name == name) || kept_master && name == MASTER.torch_name;
        if let Some(s) = self.state.iter().find(|s| !known(&s.name)) {
            return Err(bad(path, format!("the checkpoint has {}, which {} does not keep", s.name, o.name())));
        }
        let master = match (kept_master, master) {
            (false, _) => None,
            (true, None) => return Err(bad(path, "the checkpoint lacks master_param (f32 master weights)")),
            (true, Some(m)) => {
                let lens: Vec<usize> = shapes.iter().map(|s| s.iter().product()).collect();
                if m.data.format != ElementFormat::F32 || m.lens != lens {
                    return Err(bad(
                        path,
                        format!(
                            "master_param is {} of {:?} per tensor; the master weights are f32 of {lens:?}",
                            m.data.format.name(),
                            m.lens
                        ),
                    ));
                }
                Some(&m.data)
            }
        };
        let state = slots
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let found = self.state.iter().find(|s| s.name == slot.torch_name);
                let lens: Vec<usize> = shapes.iter().map(|shape| o.state_len(i, shape)).collect();
                let kept = lens.iter().any(|&n| n > 0);
                match (kept, found) {
                    // 8-bit state of tensors all too small for blocks is f32 in the file.
                    (true, Some(s))
                        if o.state_format(i) == ElementFormat::Blockwise8
                            && matches!(s.data.format, ElementFormat::Blockwise8 | ElementFormat::F32)
                            && s.lens == lens =>
                    {
                        let expected: usize = lens.iter().map(|&n| stored_bytes(ElementFormat::Blockwise8, n)).sum();
                        if s.data.bytes.len() == expected {
                            Ok(Some(&s.data))
                        } else {
                            Err(bad(
                                path,
                                format!(
                                    "{} holds {} bytes; 8-bit state of tensors of {lens:?} elements keeps {expected}",
                                    slot.torch_name,
                                    s.data.bytes.len()
                                ),
                            ))
                        }
                    }
                    (true, Some(s)) if s.data.format != o.state_format(i) => Err(bad(
                        path,
                        format!(
                            "{} is saved as {}, and this configuration keeps it as {}",
                            slot.torch_name,
                            s.data.format.name(),
                            o.state_format(i).name()
                        ),
                    )),
                    (true, Some(s)) if s.lens != lens => Err(bad(
                        path,
                        format!(
                            "{} holds {:?} values per tensor; tensors of shapes {shapes:?} keep {lens:?}",
                            slot.torch_name, s.lens
                        ),
                    )),
                    (true, Some(s)) => Ok(Some(&s.data)),
                    (false, None) => Ok(None),
                    (true, None) => Err(bad(path, format!("the checkpoint lacks {}", slot.torch_name))),
                    (false, Some(_)) => Err(bad(
                        path,
                        format!("the checkpoint has {}, which this configuration does not keep", slot.torch_name),
                    )),
                }
            })
            .collect::<Result<Vec<_>>>()?;
        // The scalars are functions of the step here: the file's must be the step's (checked
        // at a cost that does not grow with the step read from the file).
        next.restore_scalar_state(self.step, &self.scalars).map_err(|m| bad(path, m))?;
        Ok(Restore { state, master, optimizer: next, step: self.step, schedule })
    }
}

impl Snapshot {
    /// Writes the snapshot to `path`, atomically.
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut first = 0;
        let mut groups = Vec::new();
        // (name, format, shape, bytes) of every tensor of the file.
        let mut tensors: Vec<FileTensor<'_>> = Vec::new();
        for g in &self.groups {
            let indices: Vec<usize> = (first..first + g.shapes.len()).collect();
            for StateSnapshot { name, data, lens } in &g.state {
                let format = data.format;
                let covered: usize = lens.iter().map(|&n| stored_bytes(format, n)).sum();
                if data.bytes.len() != covered || lens.len() != indices.len() {
                    return Err(bad(path, format!("{name} does not cover the group's tensors {lens:?}")));
                }
                let mut at = 0;
                for (&len, &index) in lens.iter().zip(&indices) {
                    if len > 0 {
                        let bytes = stored_bytes(format, len);
                        let part = &data.bytes[at..at + bytes];
                        let key = format!("state.{index}.{name}");
                        match format {
                            // 8-bit state: the codes (U8) and each block's absmax (F32), as
                            // bitsandbytes keeps them; a tensor too small for blocks, f32.
                            ElementFormat::Blockwise8 if crate::quant::is_quantized(len) => {
                                let (codes, absmax) = crate::quant::split_blocks(part, len);
                                let blocks = absmax.len();
                                let absmax = bytemuck::cast_slice(&absmax).to_vec();
                                tensors.push((
                                    format!("{key}.absmax"),
                                    ElementFormat::F32,
                                    vec![blocks],
                                    absmax.into(),
                                ));
                                tensors.push((key, format, vec![len], codes.into()));
                            }
                            ElementFormat::Blockwise8 => {
                                tensors.push((key, ElementFormat::F32, vec![len], part.into()))
                            }
                            _ => tensors.push((key, format, vec![len], part.into())),
                        }
                        at += bytes;
                    }
                }
            }
            // 0-dimensional f32 tensors, as torch keeps `step` and `mu_product`.
            for &index in &indices {
                for (name, value) in &g.scalars {
                    let bytes = bytemuck::bytes_of(value);
                    tensors.push((format!("state.{index}.{name}"), ElementFormat::F32, vec![], bytes.into()));
                }
            }
            groups.push(json!({
                "optimizer": g.optimizer,
                "family": g.family,
                "step": g.step,
                "lr": g.lr,
                "config": g.config,
                "params": indices,
                "lens": g.lens(),
                "shapes": g.shapes,
                "schedule": g.schedule.as_ref().map(|s| json!({
                    "schedule": s.schedule, "base_lr": s.base_lr, "start_step": s.start_step,
                })),
            }));
            if g.precision != Precision::default()
                && let Some(group) = groups.last_mut().and_then(Value::as_object_mut)
            {
                group.insert("precision".into(), json!(g.precision));
            }
            first += g.shapes.len();
        }
        let mut metadata: HashMap<String, String> = HashMap::from([
            ("format".into(), FORMAT.into()),
            ("version".into(), VERSION.to_string()),
            ("param_groups".into(), Value::Array(groups).to_string()),
        ]);
        if let Some(s) = &self.scaler {
            let scaler = json!({
                "scale": s.scale,
                "_growth_tracker": s.growth_tracker,
                "growth_factor": s.growth.growth_factor,
                "backoff_factor": s.growth.backoff_factor,
                "growth_interval": s.growth.growth_interval,
            });
            metadata.insert("scaler".into(), scaler.to_string());
        }
        let sum = checksum(
            &metadata,
            tensors.iter().map(|(n, f, shape, bytes)| (n.as_str(), format!("{:?}", f.dtype()), &shape[..], &bytes[..])),
        );
        metadata.insert("checksum".into(), sum);
        let views = tensors
            .iter()
            .map(|(name, format, shape, bytes)| {
                let view =
                    TensorView::new(format.dtype(), shape.clone(), &bytes[..]).map_err(|e| bad(path, e.to_string()))?;
                Ok((name, view))
            })
            .collect::<Result<Vec<_>>>()?;
        let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| bad(path, e.to_string()))?;
        write_atomically(path, &bytes)
    }

    /// Reads and checks a snapshot: a complete safetensors file of this format and version,
    /// every tensor of a known element format and of its parameter's length, the per-parameter
    /// scalars 0-dimensional f32, every parameter with the same states.
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
        if let Some(k) = meta.keys().find(|k| !KEYS.contains(&k.as_str())) {
            return Err(bad(path, format!("unknown metadata entry `{k}`")));
        }
        let mut names = file.names();
        names.sort();
        let views = names
            .iter()
            .map(|n| Ok((*n, file.tensor(n).map_err(|e| bad(path, e.to_string()))?)))
            .collect::<Result<Vec<_>>>()?;
        let found = checksum(&meta, views.iter().map(|(n, v)| (*n, format!("{:?}", v.dtype()), v.shape(), v.data())));
        if get("checksum")? != &found {
            return Err(bad(
                path,
                format!("checksum {} does not match the contents ({found}): the file is damaged", get("checksum")?),
            ));
        }
        let parse = |key: &str| -> Result<Value> {
            serde_json::from_str(get(key)?).map_err(|e| bad(path, format!("metadata `{key}` is not JSON: {e}")))
        };
        let groups = parse("param_groups")?;
        let groups = groups.as_array().ok_or_else(|| bad(path, "metadata `param_groups` is not a list"))?;

        // Every tensor, by parameter index and state name; the 0-dimensional ones apart.
        let mut by_param: BTreeMap<usize, BTreeMap<String, HostTensor>> = BTreeMap::new();
        let mut scalars_by_param: BTreeMap<usize, BTreeMap<String, f32>> = BTreeMap::new();
        for name in file.names() {
            let unexpected = || bad(path, format!("unexpected tensor {name}: names are state.<parameter>.<state>"));
            let rest = name.strip_prefix("state.").ok_or_else(unexpected)?;
            let (digits, state) = rest.split_once('.').ok_or_else(unexpected)?;
            let index: usize = digits.parse().map_err(|_| unexpected())?;
            // One spelling per parameter: `state.00.x` and `state.0.x` would both be 0.
            if index.to_string() != digits || state.is_empty() {
                return Err(unexpected());
            }
            let view = file.tensor(name).map_err(|e| bad(path, e.to_string()))?;
            // 8-bit state's codes (its blocks' absmax is an F32 tensor `NAME.absmax` beside it).
            let format = match view.dtype() {
                safetensors::Dtype::U8 => Some(ElementFormat::Blockwise8),
                d => ElementFormat::of_dtype(d),
            };
            match (format, view.shape().len()) {
                (Some(ElementFormat::F32), 0) => {
                    let b = view.data();
                    let x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    scalars_by_param.entry(index).or_default().insert(state.to_string(), x);
                }
                (Some(format), 1) => {
                    let data = HostTensor { format, bytes: view.data().to_vec() };
                    by_param.entry(index).or_default().insert(state.to_string(), data);
                }
                _ => {
                    return Err(bad(
                        path,
                        format!(
                            "{name} is {:?} {:?}: neither a flat tensor of an element format this build \
                             reads nor a 0-dimensional F32 scalar",
                            view.dtype(),
                            view.shape()
                        ),
                    ));
                }
            }
        }

        let mut snapshot = Snapshot { groups: Vec::new(), scaler: None };
        let mut next_index = 0;
        for g in groups {
            let field = |key: &str| g.get(key).ok_or_else(|| bad(path, format!("a param group lacks `{key}`")));
            let text = |key: &str| -> Result<String> {
                field(key)?.as_str().map(str::to_string).ok_or_else(|| bad(path, format!("`{key}` is not text")))
            };
            let number = |v: &Value, key: &str| v.as_u64().ok_or_else(|| bad(path, format!("`{key}` is not a count")));
            let list = |key: &str| -> Result<Vec<usize>> {
                let v = field(key)?.as_array().ok_or_else(|| bad(path, format!("`{key}` is not a list")))?;
                v.iter().map(|x| number(x, key).map(|n| n as usize)).collect()
            };
            let (indices, lens) = (list("params")?, list("lens")?);
            // Shapes since parameters could have one; a file without them holds flat tensors.
            let shapes: Vec<Vec<usize>> = match g.get("shapes") {
                None => lens.iter().map(|&n| vec![n]).collect(),
                Some(v) => {
                    let not = || bad(path, "`shapes` is not a list of shapes");
                    let shapes = v.as_array().ok_or_else(not)?;
                    let shapes = shapes
                        .iter()
                        .map(|s| {
                            let dims = s.as_array().ok_or_else(not)?;
                            dims.iter().map(|d| d.as_u64().map(|d| d as usize).ok_or_else(not)).collect()
                        })
                        .collect::<Result<Vec<Vec<usize>>>>()?;
                    let products: Vec<Option<usize>> =
                        shapes.iter().map(|s| s.iter().try_fold(1usize, |a, &d| a.checked_mul(d))).collect();
                    if shapes.len() != lens.len() || products.iter().zip(&lens).any(|(p, &n)| *p != Some(n)) {
                        return Err(bad(path, format!("shapes {shapes:?} do not have the lengths {lens:?}")));
                    }
                    shapes
                }
            };
            let family = text("family")?;
            let expected: Vec<usize> = (next_index..next_index + lens.len()).collect();
            if indices != expected || lens.is_empty() {
                return Err(bad(path, format!("param group indices {indices:?} do not follow {next_index} in order")));
            }
            next_index += lens.len();
            let schedule = match field("schedule")? {
                Value::Null => None,
                s => Some(SchedulePosition {
                    schedule: match &s["schedule"] {
                        Value::Object(o) if o.len() == 1 => s["schedule"].clone(),
                        _ => return Err(bad(path, "the schedule is not a named configuration")),
                    },
                    base_lr: s["base_lr"].as_f64().ok_or_else(|| bad(path, "`base_lr` is not a number"))?,
                    start_step: number(&s["start_step"], "start_step")?,
                }),
            };
            // Each state of the group, end to end over its tensors, with each tensor's share (0
            // where it keeps none: a shaped step's state depends on the tensor's shape). What
            // each tensor should keep is checked against the optimizer on restore.
            let mut tensors: Vec<BTreeMap<String, HostTensor>> =
                indices.iter().map(|index| by_param.remove(index).unwrap_or_default()).collect();
            // 8-bit state: each tensor's codes joined with its blocks' absmax into its blocks.
            let mut coded_len: BTreeMap<(usize, String), usize> = BTreeMap::new();
            for (t, &index) in tensors.iter_mut().zip(&indices) {
                let coded: Vec<String> =
                    t.iter().filter(|(_, d)| d.format == ElementFormat::Blockwise8).map(|(n, _)| n.clone()).collect();
                for name in coded {
                    let absmax = t.remove(&format!("{name}.absmax")).filter(|a| a.format == ElementFormat::F32);
                    let (Some(absmax), Some(codes)) = (absmax, t.get_mut(&name)) else {
                        return Err(bad(path, format!("state.{index}.{name} (8-bit codes) has no F32 {name}.absmax")));
                    };
                    let absmax = absmax.to_f32s()?;
                    if absmax.len() != codes.bytes.len().div_ceil(crate::quant::BLOCK) {
                        return Err(bad(
                            path,
                            format!(
                                "state.{index}.{name}.absmax holds {} blocks; {} codes need {}",
                                absmax.len(),
                                codes.bytes.len(),
                                codes.bytes.len().div_ceil(crate::quant::BLOCK)
                            ),
                        ));
                    }
                    coded_len.insert((index, name.clone()), codes.bytes.len());
                    codes.bytes = crate::quant::join_blocks(&codes.bytes, &absmax);
                }
            }
            let names: std::collections::BTreeSet<String> = tensors.iter().flat_map(|t| t.keys().cloned()).collect();
            let mut state = Vec::with_capacity(names.len());
            for name in names {
                let mut all: Option<HostTensor> = None;
                let mut shares = Vec::with_capacity(indices.len());
                for (t, &index) in tensors.iter_mut().zip(&indices) {
                    let Some(data) = t.remove(&name) else {
                        shares.push(0);
                        continue;
                    };
                    shares.push(coded_len.get(&(index, name.clone())).copied().unwrap_or_else(|| data.len()));
                    match &mut all {
                        None => all = Some(data),
                        Some(all) if all.format == data.format => all.bytes.extend(data.bytes),
                        // 8-bit state: a tensor too small for blocks keeps f32.
                        Some(all)
                            if [all.format, data.format] == [ElementFormat::F32, ElementFormat::Blockwise8]
                                || [all.format, data.format] == [ElementFormat::Blockwise8, ElementFormat::F32] =>
                        {
                            all.format = ElementFormat::Blockwise8;
                            all.bytes.extend(data.bytes);
                        }
                        Some(all) => {
                            return Err(bad(
                                path,
                                format!(
                                    "state.{index}.{name} is {}, where the group's others are {}",
                                    data.format.name(),
                                    all.format.name()
                                ),
                            ));
                        }
                    }
                }
                if let Some(data) = all {
                    state.push(StateSnapshot { name, data, lens: shares });
                }
            }
            // Every tensor of the group carries the same scalars (BTreeMap: by name).
            let scalars: Vec<(String, f32)> =
                scalars_by_param.get(&indices[0]).map(|m| m.clone().into_iter().collect()).unwrap_or_default();
            for &index in &indices {
                let here: Vec<(String, f32)> =
                    scalars_by_param.remove(&index).unwrap_or_default().into_iter().collect();
                if here != scalars {
                    return Err(bad(path, format!("parameter {index} has scalars {here:?}, not {scalars:?}")));
                }
            }
            snapshot.groups.push(GroupSnapshot {
                optimizer: text("optimizer")?,
                family,
                step: number(field("step")?, "step")?,
                lr: field("lr")?.as_f64().ok_or_else(|| bad(path, "`lr` is not a number"))?,
                config: match field("config")? {
                    c @ Value::Object(_) => c.clone(),
                    _ => return Err(bad(path, "`config` is not a configuration")),
                },
                schedule,
                shapes,
                state,
                scalars,
                // Rounding to nearest where a file says nothing (as files before the modes).
                precision: match g.get("precision") {
                    None => Precision::default(),
                    Some(p) => serde_json::from_value(p.clone())
                        .map_err(|e| bad(path, format!("`precision` {p} is not a precision: {e}")))?,
                },
            });
        }
        if let Some((index, _)) = scalars_by_param.first_key_value() {
            return Err(bad(path, format!("state.{index} belongs to no param group")));
        }
        if let Some((index, _)) = by_param.first_key_value() {
            return Err(bad(path, format!("state.{index} belongs to no param group")));
        }
        if meta.contains_key("scaler") {
            let s = parse("scaler")?;
            let float = |key: &str| {
                s[key].as_f64().map(|x| x as f32).ok_or_else(|| bad(path, format!("scaler `{key}` is not a number")))
            };
            let count = |key: &str| {
                s[key]
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .ok_or_else(|| bad(path, format!("scaler `{key}` is not a count")))
            };
            snapshot.scaler = Some(ScalerState {
                scale: float("scale")?,
                growth_tracker: count("_growth_tracker")?,
                growth: crate::clip::ScalerGrowth {
                    growth_factor: float("growth_factor")?,
                    backoff_factor: float("backoff_factor")?,
                    growth_interval: count("growth_interval")?,
                },
            });
        }
        Ok(snapshot)
    }

    /// Converts group `group`'s state to the element formats `to` keeps (f32, 16-bit, 8-bit
    /// blocks; `to` of the saved family), and takes `to`'s configuration (at the saved
    /// learning rate): what loading a checkpoint into a configuration of other state formats
    /// asks for explicitly — [`load`](crate::GpuOptimizer::load) refuses a format mismatch.
    /// Each value is decoded exactly (8-bit: dequantized with its block's absmax) and stored in
    /// the new format as a step would store it (to nearest even; 8-bit: blocks quantized
    /// afresh). Nothing changes on error.
    pub fn convert_state(&mut self, group: usize, to: &dyn Optimizer) -> Result<()> {
        let not = |m: String| Error::Unsupported(format!("converting a checkpoint's state: {m}"));
        let g = self.groups.get(group).ok_or_else(|| not(format!("no param group {group}")))?;
        if g.family != to.kernel().family {
            return Err(not(format!("the group is {}, and {} cannot take its state", g.optimizer, to.name())));
        }
        let mut state = Vec::with_capacity(g.state.len());
        for s in &g.state {
            let slot = to.kernel().state.iter().position(|k| k.torch_name == s.name);
            let (signed, format) = match slot {
                Some(i) => (to.kernel().state[i].signed, to.state_format(i)),
                None => (true, ElementFormat::F32), // the master weights: f32
            };
            let mut at = 0;
            let mut bytes = Vec::new();
            for &len in &s.lens {
                let n = stored_bytes(s.data.format, len);
                let part = s
                    .data
                    .bytes
                    .get(at..at + n)
                    .ok_or_else(|| not(format!("{} is shorter than its tensors", s.name)))?;
                at += n;
                let mut values = match s.data.format {
                    ElementFormat::Blockwise8 if crate::quant::is_quantized(len) => {
                        crate::quant::dequantize_blocks(part, len, signed)
                    }
                    f => f.decode_all(part),
                };
                bytes.extend(match format {
                    ElementFormat::Blockwise8 if crate::quant::is_quantized(len) => {
                        crate::quant::Blocks::quantize(&mut values, signed).to_bytes()
                    }
                    f => f.encode_all(&values),
                });
            }
            state.push(StateSnapshot {
                name: s.name.clone(),
                data: HostTensor { format, bytes },
                lens: s.lens.clone(),
            });
        }
        let mut config = to.clone_box();
        config.set_lr(g.lr);
        let g = &mut self.groups[group];
        g.state = state;
        g.config = config.config();
        Ok(())
    }

    /// The one group of a lone optimizer's checkpoint.
    pub(crate) fn single(&self, path: &Path) -> Result<&GroupSnapshot> {
        match &self.groups[..] {
            [g] => Ok(g),
            _ => Err(bad(
                path,
                format!("the checkpoint holds {} param groups: load it into ParamGroups", self.groups.len()),
            )),
        }
    }
}

/// Writes `bytes` to a temporary name no other save (another thread's, another process's)
/// can share, flushes it, and renames it over `path`.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    static SAVES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = SAVES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp-{}-{n}", std::process::id()));
    let write = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        bad(path, format!("could not write: {e}"))
    })
}
