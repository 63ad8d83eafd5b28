//! `ferromoe devices`: the GPU adapters `--device` can name, with their limits and the
//! memory budget the plan assumes for each.

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    let all = accel::list_adapters();
    if all.is_empty() {
        println!(
            "no GPU adapter found (no Vulkan, Metal or DX12 driver?): models run on the CPU. \
             On Debian/Ubuntu, mesa-vulkan-drivers gives a software Vulkan device (lavapipe) for testing."
        );
        return Ok(());
    }
    for a in &all {
        let (budget, kind) = engine::device::default_gpu_memory(a);
        println!(
            "{a}; plan budget {} (default for {kind}; --gpu-memory sets it)",
            engine::human_bytes(budget)
        );
    }
    let auto = all
        .iter()
        .find(|a| a.discrete)
        .map_or("the CPU (no discrete GPU)".to_string(), |a| {
            format!("gpu:{}", a.index)
        });
    println!("--device auto picks {auto}");
    Ok(())
}
