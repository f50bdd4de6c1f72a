//! Parsing of plugin results and errors (CNI spec section 5 "Result types").

use std::net::IpAddr;

use serde_json::Value;

/// The outcome of a successful ADD, as needed by CRI `PodSandboxNetworkStatus`.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkStatus {
    /// The pod's addresses (without prefix length) on interfaces inside the sandbox; IPv4 before
    /// IPv6, otherwise in result order. The first is the primary (`PodSandboxNetworkStatus.ip`),
    /// the rest go to `additional_ips`. May be empty if the plugins assigned none.
    pub ips: Vec<IpAddr>,
    /// The final result document of the last plugin, exactly as printed (its `cniVersion` is the
    /// network's).
    pub raw: Value,
}

/// An error document printed by a failing plugin (`{"cniVersion","code","msg","details"}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PluginError {
    pub code: u32,
    pub msg: String,
    pub details: String,
}

/// Parses a plugin error from its stdout; `None` when it is not a CNI error document.
pub(crate) fn parse_error(stdout: &[u8]) -> Option<PluginError> {
    let v: Value = serde_json::from_slice(stdout).ok()?;
    let obj = v.as_object()?;
    let code = obj.get("code")?.as_u64()?;
    Some(PluginError {
        code: u32::try_from(code).unwrap_or(u32::MAX),
        msg: obj
            .get("msg")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        details: obj
            .get("details")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// Extracts the sandbox IPs from a result document of version 0.1.0 through 1.0.0.
///
/// 0.3.0+ (`ips[].address` CIDR with optional `interface` index into `interfaces[]`): only
/// addresses on interfaces with a non-empty `sandbox`, or without an interface index, are kept.
/// 0.1.0/0.2.0 (`ip4.ip`, `ip6.ip`) are accepted too.
///
/// Errors: a message naming the malformed field.
pub(crate) fn parse_ips(result: &Value) -> Result<Vec<IpAddr>, String> {
    let obj = result
        .as_object()
        .ok_or_else(|| "result is not a JSON object".to_string())?;
    let mut ips = Vec::new();
    if let Some(list) = obj.get("ips") {
        let list = list
            .as_array()
            .ok_or_else(|| "ips: not an array".to_string())?;
        let ifaces = obj
            .get("interfaces")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        for (i, ip) in list.iter().enumerate() {
            let addr = ip
                .get("address")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("ips[{i}].address: missing or not a string"))?;
            let parsed = parse_cidr(addr)
                .ok_or_else(|| format!("ips[{i}].address: {addr:?} is not an IP/prefix"))?;
            let in_sandbox = match ip.get("interface") {
                None | Some(Value::Null) => true,
                Some(idx) => {
                    let idx = idx
                        .as_u64()
                        .ok_or_else(|| format!("ips[{i}].interface: not an index"))?;
                    let iface = usize::try_from(idx)
                        .ok()
                        .and_then(|n| ifaces.get(n))
                        .ok_or_else(|| format!("ips[{i}].interface: index {idx} out of range"))?;
                    iface
                        .get("sandbox")
                        .and_then(Value::as_str)
                        .is_some_and(|s| !s.is_empty())
                }
            };
            if in_sandbox {
                ips.push(parsed);
            }
        }
    }
    for key in ["ip4", "ip6"] {
        if let Some(o) = obj.get(key) {
            let addr = o
                .get("ip")
                .and_then(Value::as_str)
                .ok_or_else(|| format!("{key}.ip: missing or not a string"))?;
            ips.push(
                parse_cidr(addr)
                    .ok_or_else(|| format!("{key}.ip: {addr:?} is not an IP/prefix"))?,
            );
        }
    }
    // Stable: IPv4 first (primary), then IPv6, as kubelet expects for dual stack.
    ips.sort_by_key(|ip| ip.is_ipv6());
    ips.dedup();
    Ok(ips)
}

fn parse_cidr(s: &str) -> Option<IpAddr> {
    let (ip, prefix) = s.split_once('/').unwrap_or((s, ""));
    if !prefix.is_empty() {
        prefix.parse::<u8>().ok()?;
    }
    ip.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_1_0_0() {
        let r = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "krio0", "mac": "aa:bb:cc:dd:ee:ff"},
                {"name": "veth1", "mac": "aa:bb:cc:dd:ee:fe"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:fd", "sandbox": "/run/x/net"}
            ],
            "ips": [
                {"address": "fd00::5/64", "gateway": "fd00::1", "interface": 2},
                {"address": "10.99.0.5/24", "gateway": "10.99.0.1", "interface": 2},
                {"address": "10.99.0.1/24", "interface": 0}
            ],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dns": {}
        });
        let ips = parse_ips(&r).unwrap();
        assert_eq!(
            ips,
            vec![
                "10.99.0.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
    }

    #[test]
    fn result_0_4_0() {
        let r = json!({
            "cniVersion": "0.4.0",
            "interfaces": [{"name": "eth0", "sandbox": "/proc/1/ns/net"}],
            "ips": [{"version": "4", "address": "10.88.0.7/16", "gateway": "10.88.0.1", "interface": 0}],
            "dns": {}
        });
        assert_eq!(
            parse_ips(&r).unwrap(),
            vec!["10.88.0.7".parse::<IpAddr>().unwrap()]
        );
        // No interface index: kept.
        let r = json!({"cniVersion": "0.4.0", "ips": [{"version": "4", "address": "10.1.2.3/8"}]});
        assert_eq!(
            parse_ips(&r).unwrap(),
            vec!["10.1.2.3".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn result_0_2_0_and_errors() {
        let r = json!({"cniVersion": "0.2.0", "ip4": {"ip": "10.0.0.2/24"}});
        assert_eq!(
            parse_ips(&r).unwrap(),
            vec!["10.0.0.2".parse::<IpAddr>().unwrap()]
        );
        assert!(parse_ips(&json!({"ips": [{"address": "bogus"}]}))
            .unwrap_err()
            .contains("ips[0].address"));
        assert!(
            parse_ips(&json!({"ips": [{"address": "1.2.3.4/8", "interface": 3}]}))
                .unwrap_err()
                .contains("out of range")
        );
        assert!(parse_ips(&json!([])).is_err());
        assert!(parse_ips(&json!({})).unwrap().is_empty());
    }

    #[test]
    fn error_document() {
        let e = parse_error(
            br#"{"cniVersion":"1.0.0","code":7,"msg":"bad config","details":"field x"}"#,
        )
        .unwrap();
        assert_eq!(
            e,
            PluginError {
                code: 7,
                msg: "bad config".into(),
                details: "field x".into()
            }
        );
        assert!(parse_error(b"panic: oops").is_none());
        assert!(parse_error(br#"{"msg":"no code"}"#).is_none());
    }
}
