//! How GPU tests get a device. In CI (`FERROMOE_REQUIRE_GPU=1`, set by `scripts/test.sh` after it
//! installs Mesa's lavapipe) a missing device fails the test; elsewhere the test prints why it
//! was skipped and passes.

use crate::{list_adapters, DeviceChoice, Gpu};

/// The environment variable that makes a missing GPU a test failure.
pub const REQUIRE_GPU: &str = "FERROMOE_REQUIRE_GPU";

/// A device for tests: `FERROMOE_TEST_DEVICE` if set (e.g. `gpu:0`), else the first adapter of
/// any kind (lavapipe included). `None` (after printing why) only when no adapter exists and
/// [`REQUIRE_GPU`] is not set.
pub fn test_gpu() -> Option<Gpu> {
    let choice = match std::env::var("FERROMOE_TEST_DEVICE") {
        Ok(s) => s
            .parse()
            .unwrap_or_else(|e| panic!("FERROMOE_TEST_DEVICE: {e}")),
        Err(_) => DeviceChoice::GpuIndex(0),
    };
    let required = std::env::var(REQUIRE_GPU).is_ok_and(|v| v == "1");
    match Gpu::open(&choice) {
        Ok(Some(gpu)) => Some(gpu),
        Ok(None) => unreachable!("a gpu choice never opens the CPU"),
        Err(e) if required => panic!(
            "{REQUIRE_GPU}=1 but no GPU could be opened: {e} (adapters: {:?})",
            list_adapters()
        ),
        Err(e) => {
            eprintln!(
                "GPU test skipped: {e} (install mesa-vulkan-drivers for a software Vulkan device)"
            );
            None
        }
    }
}
