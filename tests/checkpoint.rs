//! Checkpoints: a round trip through safetensors bytes, resuming gives the weights of an
//! uninterrupted run bit for bit, and damaged files get errors that say what is wrong.

mod common;

use std::collections::BTreeMap;

use common::*;
use scorefield::checkpoint::Checkpoint;
use scorefield::data::Dataset;
use scorefield::model::MlpShape;
use scorefield::objective::Objective;
use scorefield::train::{TrainConfig, Trainer};

fn config(seed: u64) -> TrainConfig {
    TrainConfig {
        batch: 128,
        seed,
        steps_per_submit: 7,
        ..TrainConfig::new(MlpShape::new(2, 2, 32), Objective::Ncsn { sigma_max: 5.0, sigma_min: 0.01, levels: 10 })
    }
}

#[test]
fn stopping_and_resuming_gives_the_weights_of_an_uninterrupted_run() {
    let gpu = gpu();
    let seed = test_seed();
    let data = Dataset::TwoMoons.sample(1000, seed);
    let mut straight = pollster::block_on(Trainer::new(&gpu, config(seed), &data)).unwrap();
    straight.run(30, 0).unwrap();
    let want = pollster::block_on(straight.checkpoint(BTreeMap::new())).unwrap();

    let mut first = pollster::block_on(Trainer::new(&gpu, config(seed), &data)).unwrap();
    first.run(13, 0).unwrap();
    let meta = BTreeMap::from([("note".to_string(), "halfway".to_string())]);
    let bytes = pollster::block_on(first.checkpoint(meta.clone())).unwrap().to_bytes().unwrap();
    drop(first);
    let ckpt = Checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(ckpt.step, 13);
    assert_eq!(ckpt.metadata, meta);
    let mut resumed = pollster::block_on(Trainer::resume(&gpu, config(seed), &data, &ckpt)).unwrap();
    resumed.run(17, 0).unwrap();
    let got = pollster::block_on(resumed.checkpoint(BTreeMap::new())).unwrap();
    assert_eq!(got.step, 30);
    for (name, a, b) in [
        ("params", &got.params, &want.params),
        ("ema", &got.ema, &want.ema),
        ("adam.m", &got.adam_m, &want.adam_m),
        ("adam.v", &got.adam_v, &want.adam_v),
    ] {
        let same = a.iter().zip(b.iter()).all(|(x, y)| x.to_bits() == y.to_bits());
        assert!(same, "{name} after resuming differs from the uninterrupted run");
    }
}

fn small_checkpoint() -> Checkpoint {
    let shape = MlpShape::new(3, 1, 4);
    let p = shape.param_count();
    let ramp = |k: f32| (0..p).map(|i| k * i as f32).collect::<Vec<_>>();
    Checkpoint {
        shape,
        step: 42,
        params: ramp(0.5),
        ema: ramp(0.25),
        adam_m: ramp(0.1),
        adam_v: ramp(0.01),
        freqs: (0..16).map(|i| i as f32).collect(),
        metadata: BTreeMap::from([("config".to_string(), "x = 1".to_string())]),
    }
}

#[test]
fn a_checkpoint_round_trips_and_names_its_tensors_like_pytorch() {
    let ckpt = small_checkpoint();
    let bytes = ckpt.to_bytes().unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), ckpt);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let w = st.tensor("layers.0.weight").unwrap();
    assert_eq!(w.shape(), &[4, 3 + 32]);
    assert_eq!(st.tensor("layers.1.bias").unwrap().shape(), &[3]);
    assert!(st.tensor("ema.layers.1.weight").is_ok());
}

/// The safetensors file `bytes` with its JSON header's `from` replaced by `to` (the same length,
/// so the file stays well-formed); the header must hold `from`.
fn edit_header(bytes: &[u8], edits: &[(&str, &str)]) -> Vec<u8> {
    let mut bytes = bytes.to_vec();
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut header = String::from_utf8(bytes[8..header_end].to_vec()).unwrap();
    for (from, to) in edits {
        assert_eq!(from.len(), to.len());
        assert!(header.contains(from), "the header should hold {from}: {header}");
        header = header.replace(from, to);
    }
    bytes[8..header_end].copy_from_slice(header.as_bytes());
    bytes
}

/// `ckpt` with another shape and constant values of its size.
fn with_shape(ckpt: &Checkpoint, shape: MlpShape) -> Checkpoint {
    let p = shape.param_count();
    Checkpoint {
        shape,
        params: vec![0.5; p],
        ema: vec![0.25; p],
        adam_m: vec![0.1; p],
        adam_v: vec![0.01; p],
        ..ckpt.clone()
    }
}

/// The residual network's checkpoint says so, and its layers above the first take [h, e]; a
/// file from before the residual network existed (no `shape.residual`) is the plain network.
#[test]
fn the_residual_network_round_trips_and_older_files_read_as_plain() {
    let plain = small_checkpoint();
    let shape = plain.shape.with_residual(true);
    let p = shape.param_count();
    assert_eq!(p, plain.shape.param_count() + 3 * 32, "the output layer's embedding columns");
    let residual = with_shape(&plain, shape);
    let bytes = residual.to_bytes().unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), residual);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("layers.1.weight").unwrap().shape(), &[3, 4 + 32]);

    // A file without the key (renamed so that the reader does not know it).
    let old = edit_header(&plain.to_bytes().unwrap(), &[("\"shape.residual\":\"0\"", "\"note.xxxxxxxxx\":\"0\"")]);
    let read = Checkpoint::from_bytes(&old).unwrap();
    assert!(!read.shape.residual);
    assert_eq!(read.params, plain.params);
}

/// A class-conditional network's checkpoint says how many classes it knows, and its layers
/// take the class code after the embedding; a file without `shape.classes` is unconditional.
/// The device's rows carry the code in whole vec4s (10 classes: 12 columns, two of them zero
/// padding); the file holds the 10 columns `nn.Linear` would, and reading it puts each value
/// back in its place and zeros in the padding.
#[test]
fn class_conditional_networks_round_trip_and_older_files_read_as_unconditional() {
    let plain = small_checkpoint();
    let shape = plain.shape.with_residual(true).with_classes(10);
    assert_eq!(shape.class_columns(), 12);
    let layers = shape.layers();
    let padding = |i: usize| layers.iter().any(|l| l.is_padding(i));
    let ramp = |k: f32| (0..shape.param_count()).map(|i| if padding(i) { 0.0 } else { k * (i + 1) as f32 }).collect();
    let conditional = Checkpoint {
        params: ramp(0.5),
        ema: ramp(0.25),
        adam_m: ramp(0.1),
        adam_v: ramp(0.01),
        ..with_shape(&plain, shape)
    };
    let bytes = conditional.to_bytes().unwrap();
    assert_eq!(Checkpoint::from_bytes(&bytes).unwrap(), conditional);
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (inputs_0, inputs_1) = (plain.shape.dim + 32 + 10, 4 + 32 + 10);
    assert_eq!(
        (layers[0].fan_in, layers[0].inputs, layers[1].fan_in, layers[1].inputs),
        (inputs_0 + 2, inputs_0, inputs_1 + 2, inputs_1)
    );
    assert_eq!(st.tensor("layers.0.weight").unwrap().shape(), &[4, inputs_0]);
    let w1 = st.tensor("layers.1.weight").unwrap();
    assert_eq!(w1.shape(), &[plain.shape.dim, inputs_1]);
    let w1: Vec<f32> = w1.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    for (r, row) in w1.chunks(inputs_1).enumerate() {
        let start = layers[1].w_offset + r * layers[1].fan_in;
        assert_eq!(row, &conditional.params[start..start + inputs_1], "row {r} of layers.1.weight");
    }
    let stored = shape.param_count() - 2 * (4 + plain.shape.dim);
    assert_eq!(st.tensor("adam.m").unwrap().shape(), &[stored]);

    let old = edit_header(&plain.to_bytes().unwrap(), &[("\"shape.classes\":\"0\"", "\"note.xxxxxxxx\":\"0\"")]);
    assert_eq!(Checkpoint::from_bytes(&old).unwrap().shape.classes, 0);
}

#[test]
fn damaged_checkpoints_get_clear_errors() {
    let ckpt = small_checkpoint();
    let bytes = ckpt.to_bytes().unwrap();
    let msg = |b: &[u8]| Checkpoint::from_bytes(b).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg(&bytes[..bytes.len() / 2]).contains("checkpoint"), "truncated: {}", msg(&bytes[..bytes.len() / 2]));
    assert!(msg(b"").contains("not a readable safetensors file"));
    let mut nan = ckpt.clone();
    nan.params[3] = f32::NAN;
    assert!(nan.to_bytes().unwrap_err().to_string().contains("params[3]"), "a NaN must never be written");
    let mut other = ckpt.clone();
    other.metadata.clear();
    // Claim another width in the header: the tensors no longer fit it.
    let wrong_shape = edit_header(&other.to_bytes().unwrap(), &[("\"shape.width\":\"4\"", "\"shape.width\":\"5\"")]);
    assert!(msg(&wrong_shape).contains("has shape"), "{}", msg(&wrong_shape));
}

#[test]
fn a_header_claiming_a_huge_network_is_refused_before_allocating() {
    let mut other = small_checkpoint();
    other.metadata.clear();
    // Width 4 -> 9, hidden layers 1 -> 9.
    let bytes = edit_header(
        &other.to_bytes().unwrap(),
        &[
            ("\"shape.width\":\"4\"", "\"shape.width\":\"9\""),
            ("\"shape.hidden_layers\":\"1\"", "\"shape.hidden_layers\":\"9\""),
        ],
    );
    let err = Checkpoint::from_bytes(&bytes).unwrap_err().to_string();
    assert!(err.contains("claims shape") && err.contains("truncated"), "{err}");
}

proptest::proptest! {
    // Mutated valid files: truncated, bytes flipped, header digits changed. Loading never
    // panics, and whatever loads is a consistent, finite checkpoint. 2000 cases in CI (about
    // a second); PROPTEST_CASES=200000 for a longer run.
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000)
    ))]
    #[test]
    fn mutated_checkpoints_never_panic(
        cut in 0usize..2000,
        flips in proptest::collection::vec((0usize..4000, 1u8..=255), 0..8),
        digit_at in proptest::option::of(0usize..400),
        digit in b'0'..=b'9',
    ) {
        let good = small_checkpoint().to_bytes().unwrap();
        let mut bytes = good.clone();
        for (at, xor) in flips {
            let i = at % bytes.len();
            bytes[i] ^= xor;
        }
        if let Some(at) = digit_at {
            // Rewrite one digit of the JSON header (sizes, offsets, shape numbers).
            let header_end = (8 + u64::from_le_bytes(good[..8].try_into().unwrap()) as usize).min(bytes.len());
            let digits: Vec<usize> = (8..header_end).filter(|&i| bytes[i].is_ascii_digit()).collect();
            if !digits.is_empty() {
                bytes[digits[at % digits.len()]] = digit;
            }
        }
        // A third of the cases also cut the file short.
        if cut % 3 == 0 {
            bytes.truncate(bytes.len().saturating_sub(cut));
        }
        if let Ok(ckpt) = Checkpoint::from_bytes(&bytes) {
            proptest::prop_assert!(ckpt.validate().is_ok());
        }
    }
}

/// The class code's padding columns (5 classes: 8 columns) have zero inputs, so their weights
/// start at zero and training leaves them there (a zero gradient moves neither Adam's moments
/// nor the weight): a checkpoint, which does not store them, loses nothing, and resuming from it
/// gives the weights of an uninterrupted run.
#[test]
fn the_class_codes_padding_weights_stay_zero_through_training() {
    let gpu = gpu();
    let seed = test_seed();
    let shape = MlpShape::new(2, 2, 32).with_residual(true).with_classes(5);
    let config = TrainConfig { shape, ..config(seed) };
    let data = Dataset::TwoMoons.sample(1000, seed);
    let labels: Vec<u32> = (0..1000).map(|i| i % 5).collect();
    let layers = shape.layers();
    let padding: Vec<usize> = (0..shape.param_count()).filter(|&i| layers.iter().any(|l| l.is_padding(i))).collect();
    assert_eq!(padding.len(), 3 * (32 + 32 + 2), "three padding columns in each row of every layer");

    let mut straight = pollster::block_on(Trainer::new_labelled(&gpu, config.clone(), &data, &labels)).unwrap();
    straight.run(20, 0).unwrap();
    let want = pollster::block_on(straight.checkpoint(BTreeMap::new())).unwrap();
    for (name, values) in
        [("params", &want.params), ("ema", &want.ema), ("adam.m", &want.adam_m), ("adam.v", &want.adam_v)]
    {
        let moved: Vec<usize> = padding.iter().copied().filter(|&i| values[i] != 0.0).collect();
        assert!(moved.is_empty(), "{name}: padding entries {moved:?} are not zero after 20 steps");
    }

    let mut first = pollster::block_on(Trainer::new_labelled(&gpu, config.clone(), &data, &labels)).unwrap();
    first.run(9, 0).unwrap();
    let bytes = pollster::block_on(first.checkpoint(BTreeMap::new())).unwrap().to_bytes().unwrap();
    let ckpt = Checkpoint::from_bytes(&bytes).unwrap();
    let mut resumed = pollster::block_on(Trainer::resume_labelled(&gpu, config, &data, &labels, &ckpt)).unwrap();
    resumed.run(11, 0).unwrap();
    let got = pollster::block_on(resumed.checkpoint(BTreeMap::new())).unwrap();
    let same = got.params.iter().zip(&want.params).all(|(a, b)| a.to_bits() == b.to_bits());
    assert!(same, "the weights after resuming from the file differ from the uninterrupted run");
}
