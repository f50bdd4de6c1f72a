use super::*;

const D: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

fn conf(text: &str) -> RegistryConfig {
    let mut c = RegistryConfig::default();
    c.merge_toml(Path::new("/t/registries.conf"), text)
        .unwrap_or_else(|e| panic!("{e}"));
    c
}

/// `(base, path, mirror)` of every source of `r`.
fn src(c: &RegistryConfig, r: &str) -> Vec<(String, String, bool)> {
    c.sources(&Reference::parse(r).unwrap())
        .unwrap_or_else(|e| panic!("{r}: {e}"))
        .into_iter()
        .map(|e| (e.base, e.path, e.mirror))
        .collect()
}

fn s(base: &str, path: &str, mirror: bool) -> (String, String, bool) {
    (base.to_string(), path.to_string(), mirror)
}

const MAN_PAGE_EXAMPLE: &str = r#"
unqualified-search-registries = ["example.com"]

[[registry]]
prefix = "example.com/foo"
insecure = false
blocked = false
location = "internal-registry-for-example.net/bar"

[[registry.mirror]]
location = "example-mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "example-mirror-1.local/mirrors/foo"
insecure = true
"#;

#[test]
fn mirrors_in_order_then_rewritten_location() {
    let c = conf(MAN_PAGE_EXAMPLE);
    assert_eq!(
        src(&c, "example.com/foo/image:latest"),
        vec![
            s(
                "https://example-mirror-0.local",
                "mirror-for-foo/image",
                true
            ),
            s("http://example-mirror-1.local", "mirrors/foo/image", true),
            s(
                "https://internal-registry-for-example.net",
                "bar/image",
                false
            ),
        ]
    );
    // The prefix must end at a separator: `example.com/foobar` is not under `example.com/foo`.
    assert_eq!(
        src(&c, "example.com/foobar/x"),
        vec![s("https://example.com", "foobar/x", false)]
    );
    // A prefix naming the repository itself matches tags and digests of it.
    assert_eq!(src(&c, &format!("example.com/foo@{D}")).len(), 3);
}

#[test]
fn longest_prefix_wins_and_insecure() {
    let c = conf(
        r#"
[[registry]]
location = "reg.io"
insecure = true

[[registry]]
prefix = "reg.io/team"
location = "team-reg.io:5000/t"

[[registry]]
prefix = "reg.io/team/app:v1"
location = "pinned.io/app"
"#,
    );
    assert_eq!(src(&c, "reg.io/x"), vec![s("http://reg.io", "x", false)]);
    assert_eq!(
        src(&c, "reg.io/team/app:v2"),
        vec![s("https://team-reg.io:5000", "t/app", false)]
    );
    let r = c
        .sources(&Reference::parse("reg.io/team/app:v1").unwrap())
        .unwrap();
    assert_eq!(r[0].base, "https://pinned.io");
    assert_eq!(r[0].path, "app");
}

#[test]
fn wildcard_prefixes() {
    let c = conf(
        r#"
[[registry]]
prefix = "*.example.com"
insecure = true
[[registry.mirror]]
location = "mirror.local:5000/ex"

[[registry]]
prefix = "exact.example.com"

[[registry]]
prefix = "*.corp.io"
location = "proxy.corp.io/cache"
"#,
    );
    // No location: the reference is used as written, with the table's settings and mirrors.
    assert_eq!(
        src(&c, "a.example.com/foo/img:1"),
        vec![
            s("https://mirror.local:5000", "ex/foo/img", true),
            s("http://a.example.com", "foo/img", false),
        ]
    );
    assert_eq!(src(&c, "x.y.example.com/i").len(), 2);
    // The apex domain is not a subdomain.
    assert_eq!(
        src(&c, "example.com/i"),
        vec![s("https://example.com", "i", false)]
    );
    // A longer (exact) prefix beats the wildcard.
    assert_eq!(
        src(&c, "exact.example.com/i"),
        vec![s("https://exact.example.com", "i", false)]
    );
    // With a location, the matched host is rewritten.
    assert_eq!(
        src(&c, "git.corp.io/team/img"),
        vec![s("https://proxy.corp.io", "cache/team/img", false)]
    );
}

#[test]
fn blocked_registries() {
    let c = conf(
        r#"
[[registry]]
prefix = "evil.io"
blocked = true

[[registry]]
prefix = "evil.io/allowed"
location = "evil.io/allowed"
"#,
    );
    match c.sources(&Reference::parse("evil.io/x/y:1").unwrap()) {
        Err(ImageError::Blocked { reference, prefix }) => {
            assert_eq!(reference, "evil.io/x/y:1");
            assert_eq!(prefix, "evil.io");
        }
        other => panic!("{other:?}"),
    }
    assert!(ImageError::Blocked {
        reference: "r".into(),
        prefix: "p".into()
    }
    .to_string()
    .contains("blocked"));
    // A more specific unblocked table wins.
    assert_eq!(src(&c, "evil.io/allowed/x").len(), 1);
}

#[test]
fn digest_only_and_tag_only_mirrors() {
    let c = conf(
        r#"
[[registry]]
prefix = "docker.io"
location = "docker.io"
[[registry.mirror]]
location = "by-digest.local"
pull-from-mirror = "digest-only"
[[registry.mirror]]
location = "by-tag.local"
pull-from-mirror = "tag-only"
[[registry.mirror]]
location = "any.local"

[[registry]]
prefix = "quay.io"
mirror-by-digest-only = true
[[registry.mirror]]
location = "q-mirror.local"
"#,
    );
    let tagged: Vec<_> = src(&c, "busybox").into_iter().map(|e| e.0).collect();
    assert_eq!(
        tagged,
        [
            "https://by-tag.local",
            "https://any.local",
            "https://registry-1.docker.io"
        ]
    );
    let digested: Vec<_> = src(&c, &format!("busybox@{D}"))
        .into_iter()
        .map(|e| e.0)
        .collect();
    assert_eq!(
        digested,
        [
            "https://by-digest.local",
            "https://any.local",
            "https://registry-1.docker.io"
        ]
    );
    // docker.io's library/ namespace survives the rewrite.
    assert_eq!(src(&c, "busybox")[0].1, "library/busybox");
    assert_eq!(src(&c, "quay.io/a/b").len(), 1);
    assert_eq!(src(&c, &format!("quay.io/a/b@{D}")).len(), 2);
}

fn cands(c: &RegistryConfig, input: &str) -> Vec<String> {
    c.candidates(input)
        .unwrap_or_else(|e| panic!("{input}: {e}"))
        .iter()
        .map(|r| r.to_string())
        .collect()
}

#[test]
fn short_names_aliases_and_search() {
    let mut c = RegistryConfig::default();
    assert_eq!(cands(&c, "busybox"), ["docker.io/library/busybox:latest"]);
    assert_eq!(cands(&c, "quay.io/a/b:1"), ["quay.io/a/b:1"]);
    c.merge_toml(
        Path::new("/t/a.conf"),
        r#"
unqualified-search-registries = ["quay.io", "docker.io", "localhost:5000"]
[aliases]
"fedora" = "registry.fedoraproject.org/fedora"
"team/tool" = "ghcr.io/team/tool"
"#,
    )
    .unwrap();
    assert_eq!(
        cands(&c, "busybox:1.36"),
        [
            "quay.io/busybox:1.36",
            "docker.io/library/busybox:1.36",
            "localhost:5000/busybox:1.36"
        ]
    );
    assert_eq!(
        cands(&c, "fedora:39"),
        ["registry.fedoraproject.org/fedora:39"]
    );
    assert_eq!(
        cands(&c, &format!("team/tool@{D}")),
        [format!("ghcr.io/team/tool@{D}")]
    );
    assert_eq!(
        cands(&c, "fedora"),
        ["registry.fedoraproject.org/fedora:latest"]
    );
    // Qualified names never use aliases or the search list.
    assert_eq!(
        cands(&c, "docker.io/fedora"),
        ["docker.io/library/fedora:latest"]
    );
    assert_eq!(cands(&c, "localhost/fedora"), ["localhost/fedora:latest"]);
    assert!(matches!(
        c.candidates("Bad"),
        Err(ImageError::InvalidReference { .. })
    ));
}

#[test]
fn load_with_dropins_in_lexical_order() {
    let dir = tempfile::Builder::new()
        .prefix("krio-image-regconf-")
        .tempdir()
        .unwrap();
    let main = dir.path().join("registries.conf");
    let d = dir.path().join("registries.conf.d");
    // Missing everything: defaults plus the extra insecure hosts.
    let c = RegistryConfig::load(&main, &["reg.local:80".into()]).unwrap();
    assert_eq!(
        c,
        RegistryConfig {
            insecure: vec!["reg.local:80".into()],
            ..Default::default()
        }
    );
    std::fs::write(&main, MAN_PAGE_EXAMPLE).unwrap();
    std::fs::create_dir(&d).unwrap();
    std::fs::write(
        d.join("20-override.conf"),
        r#"
unqualified-search-registries = ["quay.io"]
[[registry]]
prefix = "example.com/foo"
location = "replaced.example.net/baz"
[aliases]
"img" = ""
"other" = "quay.io/o/other"
"#,
    )
    .unwrap();
    std::fs::write(
        d.join("10-first.conf"),
        r#"
unqualified-search-registries = ["first.io"]
[[registry]]
location = "added.io"
insecure = true
[aliases]
"img" = "first.io/img"
"keep" = "first.io/keep"
"#,
    )
    .unwrap();
    std::fs::write(d.join("99-ignored.conf.bak"), "not toml [").unwrap();
    std::fs::create_dir(d.join("sub.conf")).unwrap();
    let c = RegistryConfig::load(&main, &[]).unwrap();
    // 20 came after 10: its search list and its example.com/foo table win.
    assert_eq!(c.unqualified_search_registries, ["quay.io"]);
    assert_eq!(
        src(&c, "example.com/foo/x"),
        vec![s("https://replaced.example.net", "baz/x", false)]
    );
    assert_eq!(
        src(&c, "added.io/x"),
        vec![s("http://added.io", "x", false)]
    );
    assert_eq!(c.registries.len(), 2);
    // The empty alias in 20 erased 10's.
    assert!(!c.aliases.contains_key("img"));
    assert_eq!(c.aliases["keep"], "first.io/keep");
    assert_eq!(c.aliases["other"], "quay.io/o/other");
    // A broken drop-in is an error naming the file.
    std::fs::write(d.join("30-bad.conf"), "unqualified-search-registries = 5").unwrap();
    match RegistryConfig::load(&main, &[]) {
        Err(ImageError::RegistriesConf { path, .. }) => assert!(path.ends_with("30-bad.conf")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn version_1_lists() {
    let c = conf(
        r#"
[registries.search]
registries = ["quay.io", "docker.io"]
[registries.insecure]
registries = ["plain.local:5000"]
[registries.block]
registries = ["evil.io"]
"#,
    );
    assert_eq!(c.unqualified_search_registries, ["quay.io", "docker.io"]);
    assert_eq!(
        src(&c, "plain.local:5000/x"),
        vec![s("http://plain.local:5000", "x", false)]
    );
    assert!(matches!(
        c.sources(&Reference::parse("evil.io/x").unwrap()),
        Err(ImageError::Blocked { .. })
    ));
}

#[test]
fn rejects_bad_files() {
    let cases = [
        ("[[registry]]\nprefix = \"https://x.io\"", "registry[0].prefix"),
        ("[[registry]]\nlocation = \"http://x.io\"", "registry[0].prefix"),
        ("[[registry]]\nprefix = \"x.io\"\nlocation = \"https://y.io\"", "registry[0].location"),
        ("[[registry]]\ninsecure = true", "both prefix and location"),
        ("[[registry]]\nprefix = \"*.x.io/ns\"", "*.example.com"),
        ("[[registry]]\nprefix = \"a.*.io\"", "registry[0].prefix"),
        ("[[registry]]\nlocation = \"*.x.io\"", "only allowed in prefix"),
        ("[[registry]]\nprefix = \"x.io\"\nlocation = \"*.y.io\"", "registry[0].location"),
        ("[[registry]]\nprefix = \"bad_host.io\"", "registry[0].prefix"),
        (
            "[[registry]]\nprefix = \"x.io\"\n[[registry.mirror]]\nlocation = \"\"",
            "registry[0].mirror[0].location",
        ),
        (
            "[[registry]]\nprefix = \"x.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"",
            "pull-from-mirror",
        ),
        (
            "[[registry]]\nprefix = \"x.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"all\"",
            "mirror-by-digest-only",
        ),
        ("[[registry]]\nprefix = \"x.io\"\n[[registry]]\nlocation = \"x.io/\"", "more than once"),
        ("unqualified-search-registries = [\"quay.io/ns\"]", "unqualified-search-registries[0]"),
        ("[aliases]\n\"quay.io/x\" = \"quay.io/x\"", "aliases"),
        ("[aliases]\n\"x:1\" = \"quay.io/x\"", "aliases"),
        ("[aliases]\n\"x\" = \"y\"", "fully-qualified"),
        ("[aliases]\n\"x\" = \"quay.io/x:1\"", "fully-qualified"),
        (&format!("[aliases]\n\"x\" = \"quay.io/x@{D}\""), "fully-qualified"),
        ("short-name-mode = \"sometimes\"", "short-name-mode"),
        ("[[registry]\n", ""),
    ];
    for (text, want) in cases {
        let mut c = RegistryConfig::default();
        match c.merge_toml(Path::new("/t/r.conf"), text) {
            Err(ImageError::RegistriesConf { path, reason }) => {
                assert_eq!(path, Path::new("/t/r.conf"));
                assert!(reason.contains(want), "{text:?}: {reason}");
            }
            other => panic!("{text:?} should fail, got {other:?}"),
        }
    }
    // Accepted spellings: trailing slashes, localhost aliases' targets, short-name-mode.
    let c = conf(
        "short-name-mode = \"enforcing\"\n[[registry]]\nprefix = \"x.io/ns/\"\nlocation = \"localhost:5000/\"\n[aliases]\n\"x\" = \"localhost:5000/x\"",
    );
    assert_eq!(c.registries[0].prefix, "x.io/ns");
    assert_eq!(c.registries[0].location, "localhost:5000");
}
