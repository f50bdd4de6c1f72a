//! Network configuration loading and selection (CNI spec section 1 "Network configuration format",
//! selection rules as in libcni `ConfFiles` / `ConfListFromFile` / `ConfListFromConf`).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::NetError;

/// CNI spec versions this runtime can drive (result parsing, `prevResult` chaining, CHECK from 0.4.0).
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// File extensions considered in the config directory, as libcni does.
pub const CONFIG_EXTENSIONS: &[&str] = &["conf", "conflist", "json"];

/// A validated network configuration list (CNI spec "Configuration format").
///
/// A single-plugin `.conf` / `.json` file is wrapped into a list with one plugin, taking the list's
/// `name` and `cniVersion` from it (libcni `ConfListFromConf`).
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfigList {
    /// The network `name` (`[a-zA-Z0-9][a-zA-Z0-9_.-]*`).
    pub name: String,
    /// The list's `cniVersion`, one of [`SUPPORTED_VERSIONS`].
    pub cni_version: String,
    /// `disableCheck`: when true CHECK is a no-op.
    pub disable_check: bool,
    /// The plugin configuration objects, in execution order; each has a string `type`.
    pub plugins: Vec<Map<String, Value>>,
    /// The file it was read from (for messages), or a description of its origin.
    pub source: PathBuf,
}

impl NetworkConfigList {
    /// The list as a JSON document (`{"cniVersion", "name", "disableCheck", "plugins"}`), for caching.
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("cniVersion".into(), Value::String(self.cni_version.clone()));
        m.insert("name".into(), Value::String(self.name.clone()));
        if self.disable_check {
            m.insert("disableCheck".into(), Value::Bool(true));
        }
        m.insert(
            "plugins".into(),
            Value::Array(self.plugins.iter().cloned().map(Value::Object).collect()),
        );
        Value::Object(m)
    }

    /// The `type` of plugin `i` (validated at parse time; empty if out of range).
    pub fn plugin_type(&self, i: usize) -> &str {
        self.plugins
            .get(i)
            .and_then(|p| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("")
    }

    /// Whether the list's version supports CHECK and DEL `prevResult` (>= 0.4.0).
    pub fn supports_check(&self) -> bool {
        version_at_least(&self.cni_version, (0, 4, 0))
    }
}

/// Parses a `.conflist` document (CNI spec section 1).
///
/// Errors: [`NetError::InvalidConfig`] naming the offending field (`name`, `cniVersion`,
/// `plugins`, `plugins[i].type`, `disableCheck`).
pub fn parse_conflist(bytes: &[u8], source: &Path) -> Result<NetworkConfigList, NetError> {
    let bad = |reason: String| NetError::InvalidConfig {
        path: source.to_path_buf(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let name = string_field(obj, "name").map_err(&bad)?;
    validate_network_name(&name).map_err(&bad)?;
    let cni_version = string_field(obj, "cniVersion").map_err(&bad)?;
    validate_version(&cni_version).map_err(&bad)?;
    let disable_check = match obj.get("disableCheck") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        // libcni also accepts the string forms.
        Some(Value::String(s)) if s == "true" => true,
        Some(Value::String(s)) if s == "false" => false,
        Some(_) => return Err(bad("disableCheck: must be a boolean".into())),
    };
    let plugins = obj
        .get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("plugins: missing or not an array".into()))?;
    if plugins.is_empty() {
        return Err(bad("plugins: empty list".into()));
    }
    let mut out = Vec::with_capacity(plugins.len());
    for (i, p) in plugins.iter().enumerate() {
        let p = p
            .as_object()
            .ok_or_else(|| bad(format!("plugins[{i}]: not an object")))?;
        let ty = string_field(p, "type").map_err(|r| bad(format!("plugins[{i}].{r}")))?;
        validate_plugin_type(&ty).map_err(|r| bad(format!("plugins[{i}].{r}")))?;
        out.push(p.clone());
    }
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check,
        plugins: out,
        source: source.to_path_buf(),
    })
}

/// Parses a single-plugin `.conf` / `.json` document and wraps it into a one-plugin list.
///
/// Errors: [`NetError::InvalidConfig`] naming `type`, `name` or `cniVersion`.
pub fn parse_conf(bytes: &[u8], source: &Path) -> Result<NetworkConfigList, NetError> {
    let bad = |reason: String| NetError::InvalidConfig {
        path: source.to_path_buf(),
        reason,
    };
    let v: Value = serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| bad("not a JSON object".into()))?;
    let ty = string_field(obj, "type").map_err(&bad)?;
    validate_plugin_type(&ty).map_err(&bad)?;
    let name = string_field(obj, "name").map_err(&bad)?;
    validate_network_name(&name).map_err(&bad)?;
    let cni_version = string_field(obj, "cniVersion").map_err(&bad)?;
    validate_version(&cni_version).map_err(&bad)?;
    Ok(NetworkConfigList {
        name,
        cni_version,
        disable_check: false,
        plugins: vec![obj.clone()],
        source: source.to_path_buf(),
    })
}

/// Lists candidate config files in `dir`: regular files (symlinks followed) whose extension is in
/// [`CONFIG_EXTENSIONS`], sorted lexically by file name. A missing `dir` yields an empty list.
///
/// Errors: [`NetError::Io`] when the directory exists but cannot be read.
pub fn config_files(dir: &Path) -> Result<Vec<PathBuf>, NetError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(NetError::Io {
                op: "read CNI config dir",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut files = Vec::new();
    for entry in rd.flatten() {
        let path = entry.path();
        let ext_ok = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| CONFIG_EXTENSIONS.contains(&e));
        if ext_ok && std::fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            files.push(path);
        }
    }
    files.sort_by(|a, b| a.file_name().cmp(&b.file_name()));
    Ok(files)
}

/// Loads one config file, choosing the parser by extension (`.conflist` vs `.conf` / `.json`).
///
/// Errors: [`NetError::Io`] when unreadable, [`NetError::InvalidConfig`] when invalid.
pub fn load_file(path: &Path) -> Result<NetworkConfigList, NetError> {
    let bytes = std::fs::read(path).map_err(|source| NetError::Io {
        op: "read CNI config",
        path: path.to_path_buf(),
        source,
    })?;
    if path.extension().and_then(|e| e.to_str()) == Some("conflist") {
        parse_conflist(&bytes, path)
    } else {
        parse_conf(&bytes, path)
    }
}

/// Selects the default network: the first valid file of [`config_files`] in lexical order; invalid
/// files are skipped (and logged). Re-reads the directory on every call.
///
/// Errors: [`NetError::NoNetworkConfig`] listing why each candidate was rejected, or that none exist.
pub fn load_default_network(dir: &Path) -> Result<NetworkConfigList, NetError> {
    let files = config_files(dir)?;
    if files.is_empty() {
        return Err(NetError::NoNetworkConfig {
            dir: dir.to_path_buf(),
            reason: "no .conflist, .conf or .json files".into(),
        });
    }
    let mut reasons = Vec::new();
    for f in &files {
        match load_file(f) {
            Ok(list) => return Ok(list),
            Err(e) => {
                tracing::warn!(file = %f.display(), error = %e, "skipping invalid CNI config");
                reasons.push(e.to_string());
            }
        }
    }
    Err(NetError::NoNetworkConfig {
        dir: dir.to_path_buf(),
        reason: reasons.join("; "),
    })
}

fn string_field(obj: &Map<String, Value>, key: &str) -> Result<String, String> {
    match obj.get(key) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("{key}: empty")),
        Some(_) => Err(format!("{key}: not a string")),
        None => Err(format!("{key}: missing")),
    }
}

/// Network names per CNI spec 1.0.0: `^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$` (also used in cache file names).
pub(crate) fn validate_network_name(name: &str) -> Result<(), String> {
    let mut bytes = name.bytes();
    let first_ok = bytes.next().is_some_and(|b| b.is_ascii_alphanumeric());
    if first_ok
        && name.len() <= 253
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
    {
        Ok(())
    } else {
        Err(format!(
            "name: {name:?} must match [a-zA-Z0-9][a-zA-Z0-9_.-]*"
        ))
    }
}

fn validate_plugin_type(ty: &str) -> Result<(), String> {
    let ok = !ty.is_empty()
        && ty != "."
        && ty != ".."
        && ty.len() <= 255
        && ty
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-+".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!("type: {ty:?} is not a valid plugin binary name"))
    }
}

fn validate_version(v: &str) -> Result<(), String> {
    if SUPPORTED_VERSIONS.contains(&v) {
        Ok(())
    } else {
        Err(format!(
            "cniVersion: {v:?} not supported (supported: {})",
            SUPPORTED_VERSIONS.join(", ")
        ))
    }
}

/// Compares dotted versions numerically; unparsable parts count as 0.
pub(crate) fn version_at_least(v: &str, min: (u32, u32, u32)) -> bool {
    let mut parts = v.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
    let got = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    got >= min
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, body: &str) {
        std::fs::write(dir.join(name), body).unwrap();
    }

    const LIST: &str = r#"{"cniVersion":"1.0.0","name":"net-b","plugins":[{"type":"bridge"},{"type":"portmap","capabilities":{"portMappings":true}}]}"#;
    const CONF: &str = r#"{"cniVersion":"0.4.0","name":"net-a","type":"bridge","bridge":"x0"}"#;

    #[test]
    fn lexical_order_first_valid_wins() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "20-b.conflist", LIST);
        write(d.path(), "10-a.conf", CONF);
        write(d.path(), "05-ignored.txt", LIST);
        let l = load_default_network(d.path()).unwrap();
        assert_eq!(l.name, "net-a");
        assert_eq!(l.plugins.len(), 1);
        assert_eq!(l.cni_version, "0.4.0");
        assert_eq!(l.plugin_type(0), "bridge");
        assert_eq!(l.plugins[0]["bridge"], "x0");
    }

    #[test]
    fn invalid_configs_are_skipped() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "00-notjson.conflist", "{nope");
        write(
            d.path(),
            "01-noplugins.conflist",
            r#"{"cniVersion":"1.0.0","name":"x","plugins":[]}"#,
        );
        write(
            d.path(),
            "02-badver.conflist",
            r#"{"cniVersion":"9.9.9","name":"x","plugins":[{"type":"bridge"}]}"#,
        );
        write(
            d.path(),
            "03-notype.conf",
            r#"{"cniVersion":"1.0.0","name":"x"}"#,
        );
        write(
            d.path(),
            "04-badtype.conf",
            r#"{"cniVersion":"1.0.0","name":"x","type":"../../bin/sh"}"#,
        );
        write(
            d.path(),
            "05-badname.conflist",
            r#"{"cniVersion":"1.0.0","name":"a/b","plugins":[{"type":"bridge"}]}"#,
        );
        std::fs::create_dir(d.path().join("06-dir.conflist")).unwrap();
        assert!(matches!(
            load_default_network(d.path()),
            Err(NetError::NoNetworkConfig { .. })
        ));
        write(d.path(), "99-good.conflist", LIST);
        let l = load_default_network(d.path()).unwrap();
        assert_eq!(l.name, "net-b");
        assert_eq!(l.plugins.len(), 2);
        assert!(l.supports_check());
    }

    #[test]
    fn empty_or_missing_dir() {
        let d = tempfile::tempdir().unwrap();
        let e = load_default_network(d.path()).unwrap_err().to_string();
        assert!(e.contains("no .conflist"), "{e}");
        assert!(load_default_network(&d.path().join("missing")).is_err());
    }

    #[test]
    fn conf_wrapped_into_list() {
        let l = parse_conf(CONF.as_bytes(), Path::new("x.conf")).unwrap();
        let j = l.to_json();
        assert_eq!(j["name"], "net-a");
        assert_eq!(j["cniVersion"], "0.4.0");
        assert_eq!(j["plugins"][0]["type"], "bridge");
        // A .conflist document in a .conf file is not a single plugin config.
        assert!(parse_conf(LIST.as_bytes(), Path::new("x.conf")).is_err());
        // Round trip through to_json.
        let again = parse_conflist(j.to_string().as_bytes(), Path::new("c")).unwrap();
        assert_eq!(again.plugins, l.plugins);
    }

    #[test]
    fn disable_check_and_versions() {
        let l = parse_conflist(
            br#"{"cniVersion":"0.3.1","name":"n","disableCheck":true,"plugins":[{"type":"ptp"}]}"#,
            Path::new("c"),
        )
        .unwrap();
        assert!(l.disable_check);
        assert!(!l.supports_check());
        assert!(version_at_least("1.0.0", (0, 4, 0)));
        assert!(!version_at_least("0.3.1", (0, 4, 0)));
    }
}
