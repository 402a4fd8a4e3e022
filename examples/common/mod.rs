//! Drawing shared by the examples: points as instanced quads read straight from an engine
//! buffer of `[n, 2]` f32 (the particles, or the data), and score-field arrows read from a grid
//! buffer and a field buffer (the evaluator's output, or an exact field) by vertex index.
//! Everything is drawn in data coordinates [-extent, extent]^2.

/// Instanced quads, one per point, `half` NDC units wide, colour subtracted from the light
/// background (the blend state): many points on one pixel saturate.
const POINTS: &str = r#"
override EXTENT: f32 = 6.0;
override HALF: f32 = 0.01;
override R: f32 = 0.0;
override G: f32 = 0.0;
override B: f32 = 0.0;

@vertex
fn vs(@builtin(vertex_index) v: u32, @location(0) point: vec2<f32>) -> @builtin(position) vec4<f32> {
    let corner = array<vec2<f32>, 6>(vec2(-1.0, -1.0), vec2(1.0, -1.0), vec2(1.0, 1.0),
                                     vec2(-1.0, -1.0), vec2(1.0, 1.0), vec2(-1.0, 1.0));
    return vec4(point / EXTENT + corner[v] * HALF, 0.0, 1.0);
}

@fragment
fn fs() -> @location(0) vec4<f32> {
    return vec4(R, G, B, 1.0);
}
"#;

/// Arrows as line segments, six vertices each (shaft and two head strokes): arrow i starts at
/// grid[i] and points along field[i] (sigma * score), its length growing with |field| up to
/// nine tenths of a grid cell.
const ARROWS: &str = r#"
override EXTENT: f32 = 6.0;
override CELL: f32 = 0.5;

@group(0) @binding(0) var<storage, read> grid: array<vec2<f32>>;
@group(0) @binding(1) var<storage, read> field: array<vec2<f32>>;

@vertex
fn vs(@builtin(vertex_index) v: u32) -> @builtin(position) vec4<f32> {
    let i = v / 6u;
    let p = grid[i];
    let f = field[i];
    let n = length(f);
    let dir = select(vec2(0.0), f / n, n > 0.0);
    let len = 0.9 * CELL * n / (1.0 + n);
    let tip = p + dir * len;
    let back = tip - dir * len * 0.35;
    let side = vec2(-dir.y, dir.x) * len * 0.2;
    let ends = array<vec2<f32>, 6>(p, tip, tip, back + side, tip, back - side);
    return vec4(ends[v % 6u] / EXTENT, 0.0, 1.0);
}

@fragment
fn fs() -> @location(0) vec4<f32> {
    return vec4(0.75, 0.75, 0.75, 1.0);
}
"#;

fn subtract() -> wgpu::BlendState {
    let component = wgpu::BlendComponent {
        src_factor: wgpu::BlendFactor::One,
        dst_factor: wgpu::BlendFactor::One,
        operation: wgpu::BlendOperation::ReverseSubtract,
    };
    wgpu::BlendState { color: component, alpha: wgpu::BlendComponent::REPLACE }
}

/// A render pipeline from WGSL `source` (entry points `vs` and `fs`, override `constants`)
/// drawing into `format` with `blend` (None: replace).
#[allow(clippy::too_many_arguments)]
fn pipeline(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    constants: &[(&str, f64)],
    buffers: &[Option<wgpu::VertexBufferLayout>],
    topology: wgpu::PrimitiveTopology,
    format: wgpu::TextureFormat,
    blend: Option<wgpu::BlendState>,
) -> wgpu::RenderPipeline {
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(label),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    let options = wgpu::PipelineCompilationOptions { constants, ..Default::default() };
    device.create_render_pipeline(&wgpu::RenderPipelineDescriptor {
        label: Some(label),
        layout: None,
        vertex: wgpu::VertexState {
            module: &module,
            entry_point: Some("vs"),
            compilation_options: options.clone(),
            buffers,
        },
        fragment: Some(wgpu::FragmentState {
            module: &module,
            entry_point: Some("fs"),
            compilation_options: options,
            targets: &[Some(wgpu::ColorTargetState { format, blend, write_mask: wgpu::ColorWrites::ALL })],
        }),
        primitive: wgpu::PrimitiveState { topology, ..Default::default() },
        depth_stencil: None,
        multisample: wgpu::MultisampleState::default(),
        multiview_mask: None,
        cache: None,
    })
}

/// Points from a vertex buffer of `Float32x2` (stride 8), drawn with `draw(0..6, 0..n)`; the
/// colour is subtracted from the background.
pub fn points_pipeline(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    extent: f32,
    half: f32,
    subtracted: [f32; 3],
) -> wgpu::RenderPipeline {
    let constants = [
        ("EXTENT", extent as f64),
        ("HALF", half as f64),
        ("R", subtracted[0] as f64),
        ("G", subtracted[1] as f64),
        ("B", subtracted[2] as f64),
    ];
    let layout = wgpu::VertexBufferLayout {
        array_stride: 8,
        step_mode: wgpu::VertexStepMode::Instance,
        attributes: &wgpu::vertex_attr_array![0 => Float32x2],
    };
    let triangles = wgpu::PrimitiveTopology::TriangleList;
    pipeline(device, "app.points", POINTS, &constants, &[Some(layout)], triangles, format, Some(subtract()))
}

/// Arrows from storage buffers `grid` and `field` (bind group 0, bindings 0 and 1), drawn with
/// `draw(0..6 * n, 0..1)`.
pub fn arrows_pipeline(
    device: &wgpu::Device,
    format: wgpu::TextureFormat,
    extent: f32,
    cell: f32,
) -> wgpu::RenderPipeline {
    let constants = [("EXTENT", extent as f64), ("CELL", cell as f64)];
    pipeline(device, "app.arrows", ARROWS, &constants, &[], wgpu::PrimitiveTopology::LineList, format, Some(subtract()))
}

/// A pipeline drawing one full-screen triangle (`draw(0..3, 0..1)`, no vertex buffers, no
/// blending) from WGSL `source` with entry points `vs` and `fs`: blits and backgrounds.
pub fn fullscreen_pipeline(
    device: &wgpu::Device,
    label: &str,
    source: &str,
    format: wgpu::TextureFormat,
) -> wgpu::RenderPipeline {
    pipeline(device, label, source, &[], &[], wgpu::PrimitiveTopology::TriangleList, format, None)
}

/// The centres of a `grid` x `grid` lattice of cells over [-extent, extent]^2, row by row from
/// the top ([grid^2, 2] f32): where the arrows start.
pub fn lattice(grid: usize, extent: f32) -> Vec<f32> {
    let cell = 2.0 * extent / grid as f32;
    (0..grid * grid)
        .flat_map(|i| [-extent + ((i % grid) as f32 + 0.5) * cell, extent - ((i / grid) as f32 + 0.5) * cell])
        .collect()
}
