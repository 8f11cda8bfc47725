//! docs/OPERATIONS.md's configuration reference is checked against config/default.toml: every key of
//! the defaults has a row, every row names a real key, and every scalar default shown is the real one.

use std::collections::BTreeMap;

const OPERATIONS: &str = include_str!("../../docs/OPERATIONS.md");
const DEFAULTS: &str = include_str!("../../config/default.toml");

/// The table's rows: key -> the default column, as written (without the backticks).
fn reference_rows() -> BTreeMap<String, String> {
    let start = OPERATIONS.find("### Configuration reference").expect("a configuration reference section");
    OPERATIONS[start..]
        .lines()
        .skip_while(|l| !l.starts_with("| key |"))
        .skip(2)
        .take_while(|l| l.starts_with("| `"))
        .filter_map(|l| {
            let cells: Vec<&str> = l.split(" | ").collect();
            let key = cells.first()?.trim_start_matches("| ").trim_matches('`').to_string();
            let default = cells.get(1)?.trim_matches('`').to_string();
            Some((key, default))
        })
        .collect()
}

/// Every leaf key of config/default.toml with its value as the table writes it.
fn default_keys() -> BTreeMap<String, String> {
    let doc: toml::Table = DEFAULTS.parse().expect("config/default.toml parses");
    let mut out = BTreeMap::new();
    for (section, table) in &doc {
        let table = table.as_table().expect("every top-level entry is a section");
        for (key, value) in table {
            let shown = match value {
                toml::Value::String(s) => format!("\"{s}\""),
                toml::Value::Array(a) if a.is_empty() => "[]".to_string(),
                toml::Value::Array(_) => "(list)".to_string(),
                other => other.to_string(),
            };
            out.insert(format!("{section}.{key}"), shown);
        }
    }
    out
}

#[test]
fn the_configuration_reference_lists_every_key_with_its_real_default() {
    let rows = reference_rows();
    let keys = default_keys();
    assert!(keys.len() > 20, "config/default.toml has only {} keys?", keys.len());
    let missing: Vec<&String> = keys.keys().filter(|k| !rows.contains_key(*k)).collect();
    assert!(missing.is_empty(), "docs/OPERATIONS.md's reference lacks {missing:?}");
    let unknown: Vec<&String> = rows.keys().filter(|k| !keys.contains_key(*k)).collect();
    assert!(unknown.is_empty(), "docs/OPERATIONS.md's reference names keys that do not exist: {unknown:?}");
    for (key, real) in &keys {
        assert_eq!(&rows[key], real, "docs/OPERATIONS.md shows another default for {key}");
    }
}
