//! The configuration reference, generated from the config types themselves: setting names and
//! defaults from [`Config::default`] through serde, descriptions from the `///` comments on the
//! fields of `config.rs` (read at build time with `include_str!`). `krio config --default` prints
//! it as commented TOML, `krio config --docs` as the Markdown table in `docs/configuration.md`;
//! a test fails when that file and the types differ, or when a setting has no description.

use std::collections::BTreeMap;

use crate::config::Config;

/// The source the descriptions come from.
const SOURCE: &str = include_str!("config.rs");

/// One field of a config struct, as declared.
#[derive(Debug, Clone)]
struct Field {
    name: String,
    ty: String,
    doc: String,
}

/// The structs and enums declared in `config.rs`: fields (in declaration order) and variants.
#[derive(Debug, Default)]
struct Types {
    structs: BTreeMap<String, Vec<Field>>,
    enums: BTreeMap<String, Vec<String>>,
}

fn parse_types() -> Types {
    let mut types = Types::default();
    let mut doc: Vec<String> = Vec::new();
    // (kind, name) of the item whose body we are in.
    let mut current: Option<(&str, String)> = None;
    for line in SOURCE.lines() {
        let t = line.trim();
        if let Some(d) = t.strip_prefix("///") {
            doc.push(d.trim().to_string());
            continue;
        }
        if t.starts_with("#[") {
            continue;
        }
        if line.starts_with('}') {
            current = None;
        } else if let Some(rest) = t.strip_prefix("pub struct ") {
            if let Some(name) = rest.strip_suffix(" {") {
                types.structs.insert(name.to_string(), Vec::new());
                current = Some(("struct", name.to_string()));
            }
        } else if let Some(rest) = t.strip_prefix("pub enum ") {
            if let Some(name) = rest.strip_suffix(" {") {
                types.enums.insert(name.to_string(), Vec::new());
                current = Some(("enum", name.to_string()));
            }
        } else if let Some((kind, owner)) = &current {
            if *kind == "struct" {
                if let Some((name, ty)) = t
                    .strip_prefix("pub ")
                    .and_then(|f| f.strip_suffix(','))
                    .and_then(|f| f.split_once(": "))
                {
                    if let Some(fields) = types.structs.get_mut(owner) {
                        fields.push(Field {
                            name: name.to_string(),
                            ty: ty.to_string(),
                            doc: doc.join(" "),
                        });
                    }
                }
            } else if let Some(variant) = t.strip_suffix(',') {
                if variant.chars().all(|c| c.is_ascii_alphanumeric()) {
                    if let Some(variants) = types.enums.get_mut(owner) {
                        // As serde writes them: every enum of config.rs is `lowercase` (one
                        // word) or `kebab-case`, and both agree with this.
                        let mut name = String::new();
                        for (i, c) in variant.chars().enumerate() {
                            if c.is_ascii_uppercase() && i > 0 {
                                name.push('-');
                            }
                            name.push(c.to_ascii_lowercase());
                        }
                        variants.push(name);
                    }
                }
            }
        }
        doc.clear();
    }
    types
}

/// One setting of the reference: its dotted key, default (as TOML), description, and the table
/// it belongs to (`""` for the top level).
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// Dotted key, e.g. `cni.conf_dir`; map entries are written `runtimes.<name>.path`.
    pub key: String,
    /// The table header it is written under in TOML (`cni`, `runtimes.runc`), empty at the top.
    pub table: String,
    /// The field name inside that table.
    pub field: String,
    /// The default as a TOML value, `None` when unset by default.
    pub default: Option<toml::Value>,
    /// The description, from the field's `///` comment (plus the allowed values of an enum).
    pub doc: String,
}

/// A table of the reference: its header, its own description, and its settings.
#[derive(Debug, Clone)]
struct Table {
    header: String,
    doc: String,
    settings: Vec<Setting>,
}

/// Walks struct `ty` (whose defaults are `value`) and appends its tables, top first.
fn walk(
    types: &Types,
    ty: &str,
    header: &str,
    doc_key: &str,
    doc: &str,
    value: Option<&toml::Value>,
    out: &mut Vec<Table>,
) {
    let fields = types.structs.get(ty).cloned().unwrap_or_default();
    let mut table = Table {
        header: header.to_string(),
        doc: doc.to_string(),
        settings: Vec::new(),
    };
    let mut nested = Vec::new();
    for f in &fields {
        let v = value.and_then(|v| v.get(&f.name));
        let join = |a: &str, b: &str| {
            if a.is_empty() {
                b.to_string()
            } else {
                format!("{a}.{b}")
            }
        };
        if types.structs.contains_key(&f.ty) {
            nested.push((
                f.ty.clone(),
                join(header, &f.name),
                join(doc_key, &f.name),
                f.doc.clone(),
                v,
            ));
            continue;
        }
        if let Some(inner) =
            f.ty.strip_prefix("BTreeMap<String, ")
                .and_then(|t| t.strip_suffix('>'))
                .filter(|t| types.structs.contains_key(*t))
        {
            for (k, ev) in v.and_then(|v| v.as_table()).into_iter().flatten() {
                nested.push((
                    inner.to_string(),
                    join(header, &format!("{}.{k}", f.name)),
                    join(doc_key, &format!("{}.<name>", f.name)),
                    format!("{} (entry `{k}`)", f.doc),
                    Some(ev),
                ));
            }
            continue;
        }
        let mut text = f.doc.clone();
        if let Some(variants) = types.enums.get(&f.ty) {
            text.push_str(&format!(" One of: {}.", variants.join(", ")));
        }
        table.settings.push(Setting {
            key: join(doc_key, &f.name),
            table: header.to_string(),
            field: f.name.clone(),
            default: v.cloned(),
            doc: text,
        });
    }
    out.push(table);
    for (ty, header, key, doc, v) in nested {
        walk(types, &ty, &header, &key, &doc, v, out);
    }
}

fn tables() -> Vec<Table> {
    let types = parse_types();
    let defaults = toml::Value::try_from(Config::default()).ok();
    let mut out = Vec::new();
    walk(&types, "Config", "", "", "", defaults.as_ref(), &mut out);
    out
}

/// Every setting with its default and description, in declaration order. Map entries present in
/// the defaults (`runtimes.runc`) appear as `runtimes.<name>.*` once per entry.
pub fn settings() -> Vec<Setting> {
    tables().into_iter().flat_map(|t| t.settings).collect()
}

fn wrap_comment(text: &str, indent: &str) -> String {
    let mut out = String::new();
    let mut line = String::new();
    for word in text.split_whitespace() {
        if !line.is_empty() && line.len() + word.len() + 1 > 96 {
            out.push_str(&format!("{indent}# {line}\n"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        out.push_str(&format!("{indent}# {line}\n"));
    }
    out
}

/// The default configuration as TOML with every setting described in a comment above it.
/// With `commented_out`, the settings themselves are comments too (`# key = value`), so a file
/// made from it documents the defaults without pinning them.
pub fn default_toml(commented_out: bool) -> String {
    let mut out = String::from(
        "# krio configuration. Every setting is shown with its built-in default.\n\
         # Files: /etc/krio/krio.toml, then /etc/krio/krio.d/*.toml in lexical order, later files\n\
         # winning key by key. Unknown keys are errors. See docs/configuration.md.\n",
    );
    let prefix = if commented_out { "# " } else { "" };
    for t in tables() {
        if !t.header.is_empty() {
            out.push('\n');
            out.push_str(&wrap_comment(&t.doc, ""));
            out.push_str(&format!("{prefix}[{}]\n", t.header));
        }
        for s in &t.settings {
            out.push('\n');
            out.push_str(&wrap_comment(&s.doc, ""));
            match &s.default {
                Some(v) => out.push_str(&format!("{prefix}{} = {v}\n", s.field)),
                None => out.push_str(&format!("# {} = (unset by default)\n", s.field)),
            }
        }
    }
    out
}

/// The Markdown table of every setting (key, default, meaning) for `docs/configuration.md`.
pub fn markdown_table() -> String {
    let mut out = String::from("| key | default | meaning |\n|---|---|---|\n");
    for s in settings() {
        let default = match &s.default {
            Some(v) => format!("`{v}`"),
            None => "(unset)".to_string(),
        };
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            s.key,
            default.replace('|', "\\|"),
            s.doc.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of the serialized defaults is described, and every described key exists.
    #[test]
    fn every_setting_is_described() {
        fn leaves(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
            match v.as_table().filter(|t| !t.is_empty()) {
                Some(t) => {
                    for (k, v) in t {
                        let key = if prefix.is_empty() {
                            k.clone()
                        } else {
                            format!("{prefix}.{k}")
                        };
                        leaves(&key, v, out);
                    }
                }
                None => out.push(prefix.to_string()),
            }
        }
        let mut serialized = Vec::new();
        leaves(
            "",
            &toml::Value::try_from(Config::default()).unwrap(),
            &mut serialized,
        );
        let serialized: Vec<String> = serialized
            .into_iter()
            .map(|k| k.replace("runtimes.runc.", "runtimes.<name>."))
            .collect();
        let settings = settings();
        for k in &serialized {
            let s = settings.iter().find(|s| &s.key == k);
            assert!(s.is_some(), "{k} is not in the reference");
            assert!(
                s.is_some_and(|s| s.doc.len() > 10),
                "{k} has no `///` description"
            );
        }
        for s in &settings {
            assert!(
                s.default.is_none() || serialized.contains(&s.key),
                "{} is described but not a setting",
                s.key
            );
        }
        assert!(settings
            .iter()
            .any(|s| s.key == "cgroup_driver" && s.doc.contains("One of: cgroupfs, systemd")));
    }

    /// Defaults → TOML (the reference `krio config --default` prints) → parse → the same values.
    #[test]
    fn the_default_reference_round_trips() {
        let text = default_toml(false);
        let parsed: Config = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(parsed, Config::default());
        // Commented out, it parses to the defaults too (it sets nothing).
        let parsed: Config = toml::from_str(&default_toml(true)).unwrap();
        assert_eq!(parsed, Config::default());
        assert!(text.contains("\n# Path of the CRI unix socket"), "{text}");
    }
}
