//! Reading the golden JSON files of tests/data (made by the scripts of tools/reference).

use serde_json::Value;

/// The JSON text `s` (the tests embed their goldens with `include_str!`).
pub fn parse(s: &str) -> Value {
    serde_json::from_str(s).unwrap()
}

/// The array `v`, each element read by `f`.
pub fn list<T>(v: &Value, f: impl FnMut(&Value) -> T) -> Vec<T> {
    v.as_array().unwrap().iter().map(f).collect()
}

/// The array of token ids `v`.
pub fn ids(v: &Value) -> Vec<u32> {
    list(v, |x| x.as_u64().unwrap() as u32)
}

/// The array of numbers `v`.
pub fn f64s(v: &Value) -> Vec<f64> {
    list(v, |x| x.as_f64().unwrap())
}

/// The string `v`.
pub fn string(v: &Value) -> String {
    v.as_str().unwrap().to_owned()
}
