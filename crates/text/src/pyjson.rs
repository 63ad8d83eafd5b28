//! JSON text exactly as Python's `json.dumps(x, ensure_ascii=False, indent=...)` writes
//! it (", " and ": " separators, insertion order), which is what transformers' chat
//! templates produce with `| tojson`.

use minijinja::value::{Value, ValueKind};
use minijinja::{Error, ErrorKind};

pub(crate) fn write(
    v: &Value,
    indent: Option<usize>,
    sort_keys: bool,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    match v.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("null"),
        ValueKind::Bool => out.push_str(if v.is_true() { "true" } else { "false" }),
        ValueKind::Number => write_number(v, out),
        ValueKind::String => write_string(v.as_str().unwrap_or_default(), out),
        ValueKind::Seq | ValueKind::Iterable => {
            let items: Vec<Value> = v.try_iter()?.collect();
            write_container(out, '[', ']', items.len(), indent, depth, |i, out| {
                write(&items[i], indent, sort_keys, depth + 1, out)
            })?;
        }
        ValueKind::Map => {
            let mut keys: Vec<Value> = v.try_iter()?.collect();
            if sort_keys {
                keys.sort_by_key(|k| k.to_string());
            }
            write_container(out, '{', '}', keys.len(), indent, depth, |i, out| {
                write_string(&keys[i].to_string(), out);
                out.push_str(": ");
                let item = v.get_item(&keys[i])?;
                write(&item, indent, sort_keys, depth + 1, out)
            })?;
        }
        other => {
            return Err(Error::new(
                ErrorKind::InvalidOperation,
                format!("tojson: cannot serialize a {other:?} value"),
            ))
        }
    }
    Ok(())
}

fn write_container(
    out: &mut String,
    open: char,
    close: char,
    n: usize,
    indent: Option<usize>,
    depth: usize,
    mut item: impl FnMut(usize, &mut String) -> Result<(), Error>,
) -> Result<(), Error> {
    out.push(open);
    if n == 0 {
        out.push(close);
        return Ok(());
    }
    for i in 0..n {
        match indent {
            Some(w) => {
                if i > 0 {
                    out.push(',');
                }
                out.push('\n');
                out.push_str(&" ".repeat(w * (depth + 1)));
            }
            None if i > 0 => out.push_str(", "),
            None => {}
        }
        item(i, out)?;
    }
    if let Some(w) = indent {
        out.push('\n');
        out.push_str(&" ".repeat(w * depth));
    }
    out.push(close);
    Ok(())
}

fn write_number(v: &Value, out: &mut String) {
    if let Ok(i) = i64::try_from(v.clone()) {
        if v.is_integer() {
            out.push_str(&i.to_string());
            return;
        }
    }
    match f64::try_from(v.clone()) {
        Ok(f) if f.is_nan() => out.push_str("NaN"),
        Ok(f) if f.is_infinite() => out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" }),
        // Python prints integral floats with ".0".
        Ok(f) if f.fract() == 0.0 && f.abs() < 1e16 => out.push_str(&format!("{f:.1}")),
        Ok(f) => out.push_str(&f.to_string()),
        Err(_) => out.push_str(&v.to_string()),
    }
}

fn write_string(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
}
