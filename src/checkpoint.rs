//! Checkpoints as safetensors bytes: the weights per layer in PyTorch's `nn.Linear` layout, the
//! EMA weights, Adam's moments, the embedding frequencies, the step and free-form metadata (the
//! CLI stores its config there). The library only converts to and from bytes; files are the
//! binary's business (written atomically there).
//!
//! Tensors (all float32, little-endian):
//! - `layers.{i}.weight` `[fan_out, fan_in]`, `layers.{i}.bias` `[fan_out]`, i = 0 ..= H (the
//!   first takes x then the 32 embedding features and, class-conditional, the class code; the
//!   last outputs sigma * score or eps);
//! - `ema.layers.{i}.weight`, `ema.layers.{i}.bias`: the same for the EMA weights;
//! - `embedding.freqs` `[16]`: the network input is (x, sin(c w), cos(c w));
//! - `adam.m`, `adam.v` `[P]`: the moments over the flat parameter vector (layer by layer,
//!   weight then bias, each row-major).
//!
//! A file's fan_in is a layer's `inputs` (`model::Layer`): the class code's zero padding
//! columns, which the device's rows carry so they are whole vec4s, are not stored, and are
//! zeros again when the file is read.
//!
//! Metadata: `scorefield.format` = "1", `shape.dim`, `shape.hidden_layers`, `shape.width`,
//! `shape.residual` ("1" for the residual network, whose layers above the first take [h, e];
//! absent or "0": the plain network, as in checkpoints from before it existed), `shape.classes`
//! (a class-conditional network's classes, whose one-hot code follows the embedding in the
//! input row; absent or "0": unconditional),
//! `step` (steps taken; with the seed this is also the RNG position, since every random number
//! is a function of (seed, step, index)), plus the caller's entries.
//!
//! In NumPy: `safetensors.numpy.load_file(path)["layers.0.weight"]`; in PyTorch the `layers.*`
//! tensors load into `nn.Linear` layers of the same shapes.

use std::collections::{BTreeMap, HashMap};
use std::ops::Range;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::error::{Error, Result};
use crate::model::{Layer, MlpShape, EMBED_FREQS};

/// A training state on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct Checkpoint {
    pub shape: MlpShape,
    pub step: u64,
    pub params: Vec<f32>,
    pub ema: Vec<f32>,
    pub adam_m: Vec<f32>,
    pub adam_v: Vec<f32>,
    pub freqs: Vec<f32>,
    /// Extra metadata (e.g. the run's config).
    pub metadata: BTreeMap<String, String>,
}

const FORMAT: &str = "1";
fn bad(why: impl Into<String>) -> Error {
    Error::invalid("checkpoint", why)
}

/// Where a layer's stored W and b are in the flat parameter vector: its W rows' first `inputs`
/// columns, and b.
fn stored_ranges(l: &Layer) -> (Vec<Range<usize>>, Range<usize>) {
    let rows = (0..l.fan_out).map(|r| l.w_offset + r * l.fan_in).map(|start| start..start + l.inputs).collect();
    (rows, l.b_offset..l.b_offset + l.fan_out)
}

/// Where every stored value is, in the order of the flat tensors (Adam's moments): layer by
/// layer, W then b.
fn stored_flat(shape: &MlpShape) -> Vec<Range<usize>> {
    shape.layers().iter().map(stored_ranges).flat_map(|(w, b)| w.into_iter().chain([b])).collect()
}

impl Checkpoint {
    /// Checks every vector has the length the shape needs and holds only finite numbers.
    pub fn validate(&self) -> Result<()> {
        self.shape.validate()?;
        let p = self.shape.param_count();
        for (name, v, len) in [
            ("params", &self.params, p),
            ("ema", &self.ema, p),
            ("adam.m", &self.adam_m, p),
            ("adam.v", &self.adam_v, p),
            ("embedding.freqs", &self.freqs, EMBED_FREQS),
        ] {
            if v.len() != len {
                return Err(bad(format!("{name} has {} values, the shape {:?} needs {len}", v.len(), self.shape)));
            }
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(bad(format!("{name}[{i}] = {} is not finite", v[i])));
            }
        }
        Ok(())
    }

    /// The safetensors bytes. Refuses a state with a non-finite number in it.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        self.validate()?;
        let stored = |values: &[f32], ranges: &[Range<usize>]| -> Vec<f32> {
            ranges.iter().flat_map(|r| values[r.clone()].iter().copied()).collect()
        };
        let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
        for (prefix, values) in [("", &self.params), ("ema.", &self.ema)] {
            for (i, l) in self.shape.layers().iter().enumerate() {
                let (w, b) = stored_ranges(l);
                tensors.push((format!("{prefix}layers.{i}.weight"), vec![l.fan_out, l.inputs], stored(values, &w)));
                tensors.push((format!("{prefix}layers.{i}.bias"), vec![l.fan_out], values[b].to_vec()));
            }
        }
        tensors.push(("embedding.freqs".into(), vec![EMBED_FREQS], self.freqs.clone()));
        let flat = stored_flat(&self.shape);
        for (name, values) in [("adam.m", &self.adam_m), ("adam.v", &self.adam_v)] {
            let values = stored(values, &flat);
            tensors.push((name.into(), vec![values.len()], values));
        }
        let views: Vec<(String, TensorView<'_>)> = tensors
            .iter()
            .map(|(name, shape, data)| {
                TensorView::new(Dtype::F32, shape.clone(), bytemuck::cast_slice(data))
                    .map(|v| (name.clone(), v))
                    .map_err(|e| bad(e.to_string()))
            })
            .collect::<Result<_>>()?;
        let mut meta: HashMap<String, String> = self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        meta.insert("scorefield.format".into(), FORMAT.into());
        meta.insert("shape.dim".into(), self.shape.dim.to_string());
        meta.insert("shape.hidden_layers".into(), self.shape.hidden_layers.to_string());
        meta.insert("shape.width".into(), self.shape.width.to_string());
        meta.insert("shape.residual".into(), u8::from(self.shape.residual).to_string());
        meta.insert("shape.classes".into(), self.shape.classes.to_string());
        meta.insert("step".into(), self.step.to_string());
        safetensors::serialize(views, Some(meta)).map_err(|e| bad(e.to_string()))
    }

    /// Reads and checks a checkpoint; every problem is an error naming what is wrong.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let (_, header) =
            SafeTensors::read_metadata(bytes).map_err(|e| bad(format!("not a readable safetensors file: {e}")))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let get = |key: &str| meta.get(key).ok_or_else(|| bad(format!("metadata `{key}` is missing")));
        let number = |key: &str| -> Result<u64> {
            get(key)?.parse::<u64>().map_err(|_| bad(format!("metadata `{key}` = `{}` is not a number", meta[key])))
        };
        if get("scorefield.format")? != FORMAT {
            return Err(bad(format!("format {} is not {FORMAT}", meta["scorefield.format"])));
        }
        let residual = match meta.get("shape.residual").map(String::as_str) {
            None | Some("0") => false,
            Some("1") => true,
            Some(other) => return Err(bad(format!("metadata `shape.residual` = `{other}` is not 0 or 1"))),
        };
        let shape = MlpShape::new(
            number("shape.dim")? as usize,
            number("shape.hidden_layers")? as usize,
            number("shape.width")? as usize,
        )
        .with_residual(residual)
        .with_classes(if meta.contains_key("shape.classes") { number("shape.classes")? as usize } else { 0 });
        shape.validate()?;
        let step = number("step")?;
        let tensors = SafeTensors::deserialize(bytes).map_err(|e| bad(format!("corrupt tensor data: {e}")))?;
        let read = |name: &str, want: &[usize]| -> Result<Vec<f32>> {
            let t = tensors.tensor(name).map_err(|_| bad(format!("tensor `{name}` is missing")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor `{name}` is {:?}, not F32", t.dtype())));
            }
            if t.shape() != want {
                return Err(bad(format!("tensor `{name}` has shape {:?}, the model needs {want:?}", t.shape())));
            }
            Ok(t.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        };
        let p = shape.param_count();
        let layers = shape.layers();
        let flat = stored_flat(&shape);
        let p_stored: usize = flat.iter().map(Range::len).sum();
        // The header's shape decides the allocations below: a header claiming a network larger
        // than the file could hold is refused before any of them.
        let needed = (4 * p_stored as u64 + EMBED_FREQS as u64) * 4;
        if needed > bytes.len() as u64 {
            return Err(bad(format!(
                "the header claims shape {shape:?} ({p_stored} parameters, {needed} bytes of tensors), but the file has \
                 only {} bytes: it is truncated or not this model's",
                bytes.len()
            )));
        }
        // The device layout: the stored values where `ranges` say, zeros in the padding.
        let placed = |stored: &[f32], ranges: &[Range<usize>], values: &mut [f32]| {
            let mut from = 0;
            for r in ranges {
                values[r.clone()].copy_from_slice(&stored[from..from + r.len()]);
                from += r.len();
            }
        };
        let mut params = vec![0.0; p];
        let mut ema = vec![0.0; p];
        for (prefix, values) in [("", &mut params), ("ema.", &mut ema)] {
            for (i, l) in layers.iter().enumerate() {
                let (w, b) = stored_ranges(l);
                placed(&read(&format!("{prefix}layers.{i}.weight"), &[l.fan_out, l.inputs])?, &w, values);
                placed(&read(&format!("{prefix}layers.{i}.bias"), &[l.fan_out])?, &[b], values);
            }
        }
        let mut adam = [vec![0.0; p], vec![0.0; p]];
        for (name, values) in ["adam.m", "adam.v"].into_iter().zip(&mut adam) {
            placed(&read(name, &[p_stored])?, &flat, values);
        }
        let [adam_m, adam_v] = adam;
        let metadata = meta
            .iter()
            .filter(|(k, _)| !(k.starts_with("shape.") || *k == "step" || *k == "scorefield.format"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let ckpt = Checkpoint {
            shape,
            step,
            params,
            ema,
            adam_m,
            adam_v,
            freqs: read("embedding.freqs", &[EMBED_FREQS])?,
            metadata,
        };
        ckpt.validate()?;
        Ok(ckpt)
    }
}
