// embed.wgsl: the noise-level embedding of the score network's input (model.rs), in one place
// for every kernel that builds network inputs (objective.wgsl: training and the Evaluator;
// sample.wgsl: the fused network and the staged path's input rows). Feature i of the 2F is
// sin(c w_i) for i < F and cos(c w_{i-F}) after, for the conditioning value c. Functions only:
// the kernel that composes it declares the override F and the F frequencies `freqs`.

fn embedding(cond: f32, i: u32) -> f32 {
    if i < F {
        return sin(cond * freqs[i]);
    }
    return cos(cond * freqs[i - F]);
}
