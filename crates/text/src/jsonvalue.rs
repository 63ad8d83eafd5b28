//! JSON text → template value, keeping the key order of objects (serde_json's own
//! `Value` sorts keys, and a template writing a tool's schema with `tojson` must write it
//! as the client sent it, as transformers does).

use std::fmt;

use minijinja::value::Value;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

/// Parses JSON text into a template value (objects become maps in document order).
pub(crate) fn parse(text: &str) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = ValueSeed.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

struct ValueSeed;

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::from(()))
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::from(()))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(ValueSeed)? {
            items.push(v);
        }
        Ok(Value::from(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries: Vec<(Value, Value)> = Vec::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(ValueSeed)?;
            // A repeated key keeps its first place and its last value, as Python does.
            match entries
                .iter_mut()
                .find(|(key, _)| key.as_str() == Some(k.as_str()))
            {
                Some(e) => e.1 = v,
                None => entries.push((Value::from(k), v)),
            }
        }
        Ok(ordered_map(entries))
    }
}

/// A template map keeping the order of `entries`.
pub(crate) fn ordered_map<K: Into<Value>>(entries: impl IntoIterator<Item = (K, Value)>) -> Value {
    Value::from_object(
        entries
            .into_iter()
            .map(|(k, v)| (k.into(), v))
            .collect::<indexmap::IndexMap<Value, Value>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_key_order_and_types() {
        let v = parse(r#"{"z": 1, "a": [true, null, 2.5, "s"], "m": {"y": -3, "b": {}}}"#).unwrap();
        let mut out = String::new();
        crate::pyjson::write(&v, None, false, 0, &mut out).unwrap();
        assert_eq!(
            out,
            r#"{"z": 1, "a": [true, null, 2.5, "s"], "m": {"y": -3, "b": {}}}"#
        );
    }

    #[test]
    fn repeated_key_keeps_first_place_last_value() {
        let v = parse(r#"{"a": 1, "b": 2, "a": 3}"#).unwrap();
        let mut out = String::new();
        crate::pyjson::write(&v, None, false, 0, &mut out).unwrap();
        assert_eq!(out, r#"{"a": 3, "b": 2}"#);
    }

    #[test]
    fn bad_json_is_an_error() {
        assert!(parse("{\"a\": ").is_err());
        assert!(parse("{} x").is_err());
    }
}
