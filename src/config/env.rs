//! `SWITCHYARD_*` environment overrides (SPEC 10): `SWITCHYARD_<KEY>` for top-level
//! keys, `SWITCHYARD_<SECTION>__<KEY>` for the others, applied onto the TOML table
//! before it is typed; and which variables make a node a production node.

pub(super) const TOP_LEVEL: &[&str] = &[
    "node_id",
    "listen",
    "broker",
    "presence_ttl",
    "drain_period",
    "redis",
    "auth",
    "api",
    "limits",
    "log",
    "routes",
    "namespaces",
    "events",
    "webhooks",
];

/// Keys whose values are strings even when they look like numbers (`SWITCHYARD_API__KEY=123`).
const STRING_KEYS: &[&str] = &[
    "node_id",
    "listen",
    "url",
    "prefix",
    "jwt_secret",
    "jwt_public_key_file",
    "issuer",
    "audience",
    "key",
    "resume_secret",
    "secret",
];

/// Environment variables that give a node its secrets: with any of them (and no
/// config file) the node is a production node, never in development mode.
const SECRET_VARS: &[&str] = &[
    "SWITCHYARD_AUTH__JWT_SECRET",
    "SWITCHYARD_AUTH__JWT_PUBLIC_KEY_FILE",
    "SWITCHYARD_API__KEY",
];

pub(super) fn secrets_in_env(vars: &[(String, String)]) -> bool {
    vars.iter().any(|(k, _)| SECRET_VARS.contains(&k.as_str()))
}

/// Applies `SWITCHYARD_<KEY>` / `SWITCHYARD_<SECTION>__<KEY>` overrides onto a TOML
/// table; returns the names of variables that match no key (logged as warnings).
pub fn apply_env_overrides(
    table: &mut toml::Table,
    vars: impl IntoIterator<Item = (String, String)>,
) -> Vec<String> {
    let mut unknown = Vec::new();
    for (name, value) in vars {
        let Some(rest) = name.strip_prefix("SWITCHYARD_") else {
            continue;
        };
        if rest == "CONFIG" || rest.is_empty() {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        if path.iter().any(String::is_empty) || !TOP_LEVEL.contains(&path[0].as_str()) {
            unknown.push(name);
            continue;
        }
        let last = path.last().map(String::as_str).unwrap_or_default();
        let parsed = if STRING_KEYS.contains(&last) {
            toml::Value::String(value.clone())
        } else {
            parse_env_value(&value)
        };
        if !set_path(table, &path, parsed) {
            unknown.push(name);
        }
    }
    unknown
}

/// Sets `path` in nested tables, creating them; false when a non-table is in the way.
fn set_path(table: &mut toml::Table, path: &[String], value: toml::Value) -> bool {
    match path {
        [] => false,
        [last] => {
            table.insert(last.clone(), value);
            true
        }
        [first, rest @ ..] => match table
            .entry(first.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        {
            toml::Value::Table(t) => set_path(t, rest, value),
            _ => false,
        },
    }
}

/// An environment value is read as a TOML value when it is one (`10`, `true`,
/// `["a","b"]`), else as a plain string.
fn parse_env_value(value: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {value}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(value.to_owned())),
        Err(_) => toml::Value::String(value.to_owned()),
    }
}
