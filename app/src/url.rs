//! The chosen model and recipe in the page's URL fragment (`#model=...&w=4&...`), so that a
//! link reproduces the setup. Read once at start; rewritten in place (no history entries).

use crate::protocol::QuantConfig;

/// The fragment's `key=value` pairs.
pub fn read() -> Vec<(String, String)> {
    let hash = web_sys::window().and_then(|w| w.location().hash().ok()).unwrap_or_default();
    hash.trim_start_matches('#')
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), js_sys::decode_uri_component(v).ok().and_then(|s| s.as_string()).unwrap_or_default()))
        .collect()
}

/// The value of `key` in the fragment.
pub fn get(key: &str) -> Option<String> {
    read().into_iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Sets (or, with `None`, removes) `key` in the fragment, keeping the other pairs.
pub fn set(key: &str, value: Option<&str>) {
    set_all(&[(key, value)]);
}

/// Sets (or removes) several keys at once, keeping the other pairs; the URL is rewritten once,
/// and only when the fragment changes (each rewrite costs the page about a millisecond).
pub fn set_all(changes: &[(&str, Option<&str>)]) {
    let current = read();
    let mut pairs: Vec<(String, String)> = current.iter().filter(|(k, _)| !changes.iter().any(|(c, _)| c == k)).cloned().collect();
    pairs.extend(changes.iter().filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string()))));
    pairs.sort_by(|a, b| order(&a.0).cmp(&order(&b.0)));
    let mut before = current;
    before.sort_by(|a, b| order(&a.0).cmp(&order(&b.0)));
    if pairs == before {
        return;
    }
    let frag: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={}", js_sys::encode_uri_component(v))).collect();
    if let Some(history) = web_sys::window().and_then(|w| w.history().ok()) {
        let _ = history.replace_state_with_url(&wasm_bindgen::JsValue::NULL, "", Some(&format!("#{}", frag.join("&"))));
    }
}

/// The recipe of `c` as the fragment's keys, in their order (`compressed` is not part of a link).
pub fn recipe(c: &QuantConfig) -> Vec<(&'static str, String)> {
    let b = |v: bool| if v { "1" } else { "0" }.to_string();
    vec![
        ("w", c.weight_bits.to_string()),
        ("a", c.act_bits.to_string()),
        ("pc", b(c.per_channel)),
        ("dfq", b(c.dfq)),
        ("bc", b(c.bias_correction)),
        ("ada", c.adaround_iterations.to_string()),
        ("aimet", b(c.aimet_compatible)),
        ("cm", b(c.cle_measured)),
        ("cs", c.scheme.key().to_string()),
        ("n", c.calib_samples.to_string()),
    ]
}

/// The model first, then the recipe keys in a fixed order.
fn order(k: &str) -> usize {
    ["model", "w", "a", "pc", "dfq", "bc", "ada", "aimet", "cm", "cs", "n"].iter().position(|x| *x == k).unwrap_or(99)
}
