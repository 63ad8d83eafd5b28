//! `ferromoe inspect`: what a GGUF file holds, for people (`inspect FILE`) and for
//! scripts (`inspect FILE --json`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use engine::{human_bytes, human_count};
use gguf::{Array, Gguf, Metadata, Value};
use serde_json::json;

/// Arrays longer than this are summarised (type and length) instead of printed.
const MAX_ARRAY_SHOWN: usize = 32;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file (a model, or a vocabulary-only file; any part of a split set opens
    /// the whole set).
    file: PathBuf,
    /// Print one JSON object instead of the human-readable summary.
    #[arg(long)]
    json: bool,
    /// Also list every tensor: name, type, shape (ggml `ne`), offset, bytes.
    #[arg(long)]
    tensors: bool,
    /// Print the placement plan instead: where each tensor group goes (tier, storage,
    /// deciding rule) with bytes per tier, under the placement options given.
    #[arg(long, conflicts_with_all = ["json", "tensors"])]
    plan: bool,
    #[command(flatten)]
    placement: super::load::PlacementArgs,
    /// With --plan: the GPU tier of this device (default auto).
    #[command(flatten)]
    device: super::load::DeviceArgs,
}

pub fn run(args: Args) -> anyhow::Result<()> {
    let file = Gguf::open(&args.file)?;
    if args.plan {
        return print_plan(file, &args.placement, &args.device);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&file, args.tensors))?
        );
    } else {
        print_human(&file, args.tensors);
    }
    Ok(())
}

/// `inspect --plan`: binds the model (no repack, no conversion) and prints what the
/// placement rules decide for every tensor group.
fn print_plan(
    file: Gguf,
    args: &super::load::PlacementArgs,
    device: &super::load::DeviceArgs,
) -> anyhow::Result<()> {
    let file = std::sync::Arc::new(file);
    let mut model = model::Model::load(file.clone())?;
    let devices = engine::Devices::open(&device.device, device.gpu_memory)?;
    let opts = engine::LoadOptions {
        placement: args.rules()?,
        repack: !args.no_repack,
        ..Default::default()
    };
    let infos = model.weights.tensor_infos(&file);
    let (placed, gpu) = engine::plan_tiers(&model, &opts, &devices, infos)?;
    println!("{}", devices.line);
    println!(
        "{}: {} ({} in {} tensors)",
        file.name(),
        model.config.arch.name(),
        human_bytes(file.tensors().iter().map(|t| t.size).sum()),
        file.tensors().len()
    );
    for line in placed.lines(&placed.predicted_outcome(), true) {
        println!("{line}");
    }
    if let Some(g) = gpu {
        println!(
            "gpu tier: {} tensors, {} of weights + {} scratch, budget {} ({})",
            g.tensors,
            human_bytes(g.weight_bytes),
            human_bytes(g.scratch_bytes),
            human_bytes(g.budget.0),
            g.budget.1
        );
        if let Some(o) = g.overflow {
            println!("warning: {o}");
        }
    }
    println!(
        "(before the memory plan: at load, repacked weights that do not fit in the usable memory stay mapped)"
    );
    Ok(())
}

fn parameter_count(file: &Gguf) -> u64 {
    file.tensors().iter().map(|t| t.n_elements()).sum()
}

/// (tensor count, bytes) per tensor type, ordered by type id.
fn bytes_per_type(file: &Gguf) -> BTreeMap<gguf::GgmlType, (usize, u64)> {
    let mut m = BTreeMap::new();
    for t in file.tensors() {
        let e = m.entry(t.ty).or_insert((0, 0));
        e.0 += 1;
        e.1 += t.size;
    }
    m
}

fn to_json(file: &Gguf, with_tensors: bool) -> serde_json::Value {
    let metadata: serde_json::Map<String, serde_json::Value> = file
        .metadata()
        .iter()
        .map(|(k, v)| (k.to_string(), value_json(v)))
        .collect();
    let types: serde_json::Map<String, serde_json::Value> = bytes_per_type(file)
        .into_iter()
        .map(|(ty, (n, bytes))| (ty.name().to_string(), json!({"tensors": n, "bytes": bytes})))
        .collect();
    let mut out = json!({
        "file": file.name(),
        "gguf_version": file.version(),
        "file_size": file.file_size(),
        "architecture": file.metadata().opt_str("general.architecture").ok().flatten(),
        "name": file.metadata().opt_str("general.name").ok().flatten(),
        "tensor_count": file.tensors().len(),
        "parts": file
            .parts()
            .iter()
            .map(|p| json!({"file": p.name(), "bytes": p.file_size(), "tensors": p.tensor_count()}))
            .collect::<Vec<_>>(),
        "parameter_count": parameter_count(file),
        "tensor_types": types,
        "metadata": metadata,
    });
    if with_tensors {
        out["tensors"] = file
            .tensors()
            .iter()
            .map(|t| json!({"name": t.name, "type": t.ty.name(), "ne": t.ne, "offset": t.offset, "bytes": t.size, "part": t.part + 1}))
            .collect();
    }
    out
}

fn float_json(x: f64) -> serde_json::Value {
    serde_json::Number::from_f64(x)
        .map(serde_json::Value::Number)
        .unwrap_or(serde_json::Value::Null)
}

fn value_json(v: &Value) -> serde_json::Value {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float_json(*x as f64),
        Value::F64(x) => float_json(*x),
        Value::Bool(x) => json!(x),
        Value::String(s) => json!(s),
        Value::Array(a) => array_json(a),
    }
}

fn array_json(a: &Array) -> serde_json::Value {
    if a.len() > MAX_ARRAY_SHOWN {
        return json!({"array_of": a.elem_type().name(), "length": a.len()});
    }
    match a {
        Array::U8(v) => json!(v),
        Array::I8(v) => json!(v),
        Array::U16(v) => json!(v),
        Array::I16(v) => json!(v),
        Array::U32(v) => json!(v),
        Array::I32(v) => json!(v),
        Array::U64(v) => json!(v),
        Array::I64(v) => json!(v),
        Array::F32(v) => v.iter().map(|&x| float_json(x as f64)).collect(),
        Array::F64(v) => v.iter().map(|&x| float_json(x)).collect(),
        Array::Bool(v) => json!(v),
        Array::String(v) => json!(v),
        Array::Array(v) => v.iter().map(array_json).collect(),
    }
}

/// A value printed on one line (long arrays and strings shortened).
fn value_short(v: &Value) -> String {
    match v {
        Value::String(s) => {
            let one_line = s.replace('\n', "\\n");
            if one_line.chars().count() > 60 {
                format!(
                    "{:?}… ({} chars)",
                    one_line.chars().take(57).collect::<String>(),
                    s.chars().count()
                )
            } else {
                format!("{one_line:?}")
            }
        }
        Value::Array(a) if a.len() > 8 => format!("[{} × {}]", a.len(), a.elem_type().name()),
        other => value_json(other).to_string(),
    }
}

fn tokenizer_summary(md: &Metadata) -> Option<String> {
    let model = md.opt_str("tokenizer.ggml.model").ok().flatten()?;
    let mut s = model.to_string();
    if let Ok(Some(pre)) = md.opt_str("tokenizer.ggml.pre") {
        s += &format!(" (pre {pre})");
    }
    let tokens = md.opt_str_array("tokenizer.ggml.tokens").ok().flatten();
    if let Some(t) = &tokens {
        s += &format!(", {} tokens", t.len());
    }
    for (label, key) in [
        ("bos", "tokenizer.ggml.bos_token_id"),
        ("eos", "tokenizer.ggml.eos_token_id"),
    ] {
        if let Ok(Some(id)) = md.opt_u32(key) {
            let text = tokens
                .as_ref()
                .and_then(|t| t.get(id as usize))
                .map(|t| format!(" {t:?}"))
                .unwrap_or_default();
            s += &format!(", {label} {id}{text}");
        }
    }
    if let Ok(Some(b)) = md.opt_bool("tokenizer.ggml.add_bos_token") {
        s += &format!(", add_bos {b}");
    }
    if let Ok(Some(m)) = md.opt_str_array("tokenizer.ggml.merges") {
        s += &format!(", {} merges", m.len());
    }
    let template = md.contains("tokenizer.chat_template");
    s += if template {
        ", chat template"
    } else {
        ", no chat template"
    };
    Some(s)
}

fn print_human(file: &Gguf, with_tensors: bool) {
    let md = file.metadata();
    let arch = md.opt_str("general.architecture").ok().flatten();
    println!(
        "file:          {} ({}, GGUF v{})",
        file.name(),
        human_bytes(file.file_size()),
        file.version()
    );
    if file.parts().len() > 1 {
        println!("parts:         {} (split set)", file.parts().len());
        for (i, p) in file.parts().iter().enumerate() {
            println!(
                "  {:>5}  {:>12}  {:>5} tensors  {}",
                i + 1,
                human_bytes(p.file_size()),
                p.tensor_count(),
                p.name()
            );
        }
    }
    println!("architecture:  {}", arch.unwrap_or("(none)"));
    if let Ok(Some(name)) = md.opt_str("general.name") {
        println!("name:          {name}");
    }
    if let Ok(Some(ft)) = md.opt_u32("general.file_type") {
        println!(
            "file type:     {} ({ft})",
            gguf::file_type_name(ft).unwrap_or("unknown")
        );
    }
    println!(
        "parameters:    {} ({})",
        human_count(parameter_count(file)),
        parameter_count(file)
    );
    if let Some(arch) = arch {
        let prefix = format!("{arch}.");
        let hyper: Vec<_> = md.iter().filter(|(k, _)| k.starts_with(&prefix)).collect();
        if !hyper.is_empty() {
            println!("hyper-parameters:");
            for (k, v) in hyper {
                println!("  {:<40} {}", &k[prefix.len()..], value_short(v));
            }
        }
    }
    if let Some(tok) = tokenizer_summary(md) {
        println!("tokenizer:     {tok}");
    }
    println!("tensors:       {}", file.tensors().len());
    for (ty, (n, bytes)) in bytes_per_type(file) {
        println!(
            "  {:<8} {:>6} tensors  {:>12}",
            ty.name(),
            n,
            human_bytes(bytes)
        );
    }
    if with_tensors {
        let split = file.parts().len() > 1;
        println!(
            "{:<48} {:<8} {:<28} {:>12} {:>12}{}",
            "name",
            "type",
            "ne",
            "offset",
            "bytes",
            if split { "  part" } else { "" }
        );
        for t in file.tensors() {
            let ne = format!("{:?}", t.ne);
            let part = if split {
                format!("  {:>4}", t.part + 1)
            } else {
                String::new()
            };
            println!(
                "{:<48} {:<8} {:<28} {:>12} {:>12}{part}",
                t.name,
                t.ty.name(),
                ne,
                t.offset,
                t.size
            );
        }
    }
}
