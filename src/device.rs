//! The one place that turns `--device` and `--threads` into a burn device.

use anyhow::{Result, bail};
use burn::tensor::Device;
use clap::ValueEnum;

/// Where models run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The fastest CPU path (currently flex).
    Cpu,
    /// burn's pure-Rust flex backend.
    Flex,
    /// burn's ndarray backend (deprecated upstream, kept for comparison).
    Ndarray,
    /// A GPU through wgpu (Vulkan, Metal or DX12).
    Wgpu,
}

/// Sizes the CPU thread pool (0: one per core) and returns the device.
pub fn select(choice: DeviceChoice, threads: usize) -> Result<Device> {
    if threads > 0 {
        // The CPU backends run their kernels on rayon's global pool.
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
        {
            tracing::warn!("thread pool already set up, --threads ignored: {e}");
        }
    }
    Ok(match choice {
        DeviceChoice::Cpu | DeviceChoice::Flex => Device::flex(),
        #[allow(deprecated)]
        DeviceChoice::Ndarray => Device::ndarray(),
        DeviceChoice::Wgpu => match Device::wgpu_options().init() {
            Ok(d) => d,
            Err(e) => bail!("no GPU adapter ({e}); install a Vulkan driver or use --device cpu"),
        },
    })
}
