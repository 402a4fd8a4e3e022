//! Errors on the device paths: a missing adapter and a device without the limits the kernels
//! need are `Err`s that say what to do, never panics. (One test binary of its own, since the
//! adapter test sets a process-wide environment variable.)

use scorefield::gpu::Gpu;
use scorefield::Error;

#[test]
fn unknown_adapter_name_is_an_error_listing_the_adapters() {
    // The only test in this binary that reads or writes the environment.
    std::env::set_var("WGPU_ADAPTER_NAME", "no-such-adapter-anywhere");
    let result = pollster::block_on(Gpu::new());
    std::env::remove_var("WGPU_ADAPTER_NAME");
    match result {
        Err(e @ Error::AdapterNotFound { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("no-such-adapter-anywhere"), "message does not name the request: {msg}");
            assert!(msg.contains("the adapters here are"), "message does not list the adapters: {msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an adapter matched a name no adapter has"),
    }
}

#[test]
fn an_app_device_without_the_needed_limits_is_refused_by_name() {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    let adapter = pollster::block_on(instance.request_adapter(&Default::default())).expect("CI has an adapter");
    // A device as a cautious app might make it: WebGL2-level limits, no storage buffers at all.
    let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
        required_limits: wgpu::Limits::downlevel_webgl2_defaults(),
        ..Default::default()
    }))
    .expect("a device with lower limits");
    match Gpu::from_device(device, queue) {
        Err(e @ Error::Limit { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("max_") && msg.contains("needs at least"), "unclear message: {msg}");
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("a device without storage buffers was accepted"),
    }
}
