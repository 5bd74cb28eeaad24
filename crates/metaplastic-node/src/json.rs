//! Plain data across the boundary, both ways through serde. Configurations and options arrive as JS
//! objects and are deserialised by `config::from_value`, which names the path of a bad field. The object
//! is first read as JSON with JSON.stringify's rules, so that what a caller writes means the same in
//! TypeScript and in a config file: only own enumerable properties, undefined ones absent, whole numbers
//! stay integers (a seed above 2³² is still a seed), and a non-finite number is null (the engine then
//! names the field that needs a number). Records and results go back serialised from the Rust type that
//! their TypeScript type is generated from (src/engine-types.ts).
use napi::bindgen_prelude::{
    FromNapiValue, JsObjectValue, Object, ToNapiValue, TypeName, Unknown, ValidateNapiValue, ValueType,
};
use napi::{sys, JsValue};
use serde_json::{Map, Number, Value};

/// Deeper than any configuration; it stops a self-referencing object.
const MAX_DEPTH: usize = 64;

/// A record or result on its way to JS, serialised by serde from a Rust type whose TypeScript type is
/// generated from the same definition (a non-finite number becomes null, as that type says).
pub struct JsOutput(pub Value);

impl JsOutput {
    pub fn of<T: serde::Serialize>(v: &T) -> metaplastic_core::Result<Self> {
        serde_json::to_value(v).map(JsOutput).map_err(|e| metaplastic_core::Error::Internal(e.to_string()))
    }
}

impl TypeName for JsOutput {
    fn type_name() -> &'static str {
        "object"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ToNapiValue for JsOutput {
    unsafe fn to_napi_value(env: sys::napi_env, val: Self) -> napi::Result<sys::napi_value> {
        unsafe { Value::to_napi_value(env, val.0) }
    }
}

/// A JS value read as JSON.
pub struct JsInput(pub Value);

impl TypeName for JsInput {
    fn type_name() -> &'static str {
        "object"
    }
    fn value_type() -> ValueType {
        ValueType::Object
    }
}

impl ValidateNapiValue for JsInput {}

impl FromNapiValue for JsInput {
    unsafe fn from_napi_value(env: sys::napi_env, value: sys::napi_value) -> napi::Result<Self> {
        Ok(JsInput(read(unsafe { Unknown::from_napi_value(env, value)? }, "", 0)?))
    }
}

fn bad(path: &str, what: &str) -> napi::Error {
    let at = if path.is_empty() { "config".to_string() } else { path.to_string() };
    napi::Error::from_reason(format!("[E_CONFIG] {at}: {what}"))
}

fn read(v: Unknown, path: &str, depth: usize) -> napi::Result<Value> {
    if depth > MAX_DEPTH {
        return Err(bad(path, "nested too deeply (a value that contains itself?)"));
    }
    Ok(match v.get_type()? {
        ValueType::Undefined | ValueType::Null => Value::Null,
        ValueType::Boolean => Value::Bool(unsafe { v.cast::<bool>()? }),
        ValueType::String => Value::String(unsafe { v.cast::<String>()? }),
        ValueType::Number => number(unsafe { v.cast::<f64>()? }),
        ValueType::Object => {
            let obj: Object = unsafe { v.cast()? };
            let mut is_array = false;
            napi::check_status!(unsafe { sys::napi_is_array(obj.value().env, obj.raw(), &mut is_array) })?;
            if is_array {
                let items = (0..obj.get_array_length()?)
                    .map(|i| read(obj.get_element::<Unknown>(i)?, &format!("{path}[{i}]"), depth + 1))
                    .collect::<napi::Result<Vec<_>>>()?;
                Value::Array(items)
            } else {
                let mut map = Map::new();
                for key in own_keys(&obj)? {
                    let item: Unknown = obj.get_named_property(&key)?;
                    if item.get_type()? == ValueType::Undefined {
                        continue;
                    }
                    let at = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                    map.insert(key, read(item, &at, depth + 1)?);
                }
                Value::Object(map)
            }
        }
        other => {
            return Err(bad(
                path,
                &format!("expected plain data (objects, arrays, numbers, strings, booleans), got a {other}"),
            ))
        }
    })
}

/// The object's own enumerable string keys, as JSON.stringify takes them.
fn own_keys(obj: &Object) -> napi::Result<Vec<String>> {
    let env = obj.value().env;
    let mut names = std::ptr::null_mut();
    let filter = sys::KeyFilter::enumerable | sys::KeyFilter::skip_symbols;
    napi::check_status!(unsafe {
        sys::napi_get_all_property_names(
            env,
            obj.raw(),
            sys::KeyCollectionMode::own_only,
            filter,
            sys::KeyConversion::numbers_to_strings,
            &mut names,
        )
    })?;
    let names: Object = unsafe { Object::from_napi_value(env, names)? };
    (0..names.get_array_length()?).map(|i| names.get_element::<String>(i)).collect()
}

fn number(x: f64) -> Value {
    const SAFE: f64 = 9_007_199_254_740_991.0; // Number.MAX_SAFE_INTEGER
    if x.fract() == 0.0 && x.abs() <= SAFE {
        if x >= 0.0 {
            Value::Number(Number::from(x as u64))
        } else {
            Value::Number(Number::from(x as i64))
        }
    } else {
        Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}
