//! Plugin manifests: what a plugin declares it needs, parsed strictly (an unknown
//! key is an error, so a typo never silently drops a restriction), and the
//! matching rules that decide whether a declared pattern covers a resource.
//!
//! ```json
//! {"name": "sms-sender", "version": "1.2.0", "description": "…",
//!  "permissions": {
//!    "entities": {"read": ["person"], "write": ["message"]},
//!    "events":   {"emit": ["communication.MessageSent", "sms.*"]},
//!    "secrets":  ["TWILIO_AUTH_TOKEN"],
//!    "network":  ["api.twilio.com", "*.twilio.com"]},
//!  "limits": {"memory_mb": 32, "cpu_ms": 50, "wall_ms": 5000}}
//! ```

use crate::event_type;
use crate::names;
use serde::Deserialize;
use std::fmt;

/// What a plugin may be authorized to do; the `action` of `spine.authorize`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    EntitiesRead,
    EntitiesWrite,
    EventsEmit,
    SecretsRead,
    SecretsWrite,
    NetworkFetch,
    /// Act for a user once verified (a public webhook resolving the resource's
    /// owner): declared as `"users": {"act_as": true}`, resource `*`, consented
    /// by each user it acts for.
    UsersActAs,
}

impl Action {
    pub const ALL: [Action; 7] = [
        Action::EntitiesRead,
        Action::EntitiesWrite,
        Action::EventsEmit,
        Action::SecretsRead,
        Action::SecretsWrite,
        Action::NetworkFetch,
        Action::UsersActAs,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Action::EntitiesRead => "entities.read",
            Action::EntitiesWrite => "entities.write",
            Action::EventsEmit => "events.emit",
            Action::SecretsRead => "secrets.read",
            Action::SecretsWrite => "secrets.write",
            Action::NetworkFetch => "network.fetch",
            Action::UsersActAs => "users.act_as",
        }
    }

    pub fn parse(name: &str) -> Option<Action> {
        Action::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Whether a declared pattern covers a concrete resource (or a narrower pattern).
    pub fn covers(self, pattern: &str, resource: &str) -> bool {
        match self {
            // `communication.*` covers every type of the domain.
            Action::EventsEmit => match pattern.strip_suffix(".*") {
                Some(domain) => resource
                    .strip_prefix(domain)
                    .is_some_and(|rest| rest.starts_with('.')),
                None => pattern == resource,
            },
            // `*.twilio.com` covers subdomains, not twilio.com itself; hosts are
            // case-insensitive.
            Action::NetworkFetch => {
                let resource = resource.to_ascii_lowercase();
                match pattern.strip_prefix("*.") {
                    Some(suffix) => resource
                        .strip_suffix(suffix)
                        .is_some_and(|rest| rest.ends_with('.') && rest.len() > 1),
                    None => pattern == resource,
                }
            }
            Action::EntitiesRead
            | Action::EntitiesWrite
            | Action::SecretsRead
            | Action::SecretsWrite
            | Action::UsersActAs => pattern == resource,
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EntityPermissions {
    #[serde(default)]
    pub read: Vec<String>,
    #[serde(default)]
    pub write: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EventPermissions {
    #[serde(default)]
    pub emit: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Permissions {
    #[serde(default)]
    pub entities: EntityPermissions,
    #[serde(default)]
    pub events: EventPermissions,
    #[serde(default)]
    pub secrets: SecretPermissions,
    #[serde(default)]
    pub network: Vec<String>,
    #[serde(default)]
    pub users: UserPermissions,
    #[serde(default)]
    pub ai: AiPermissions,
}

/// `ai`: `{"embeddings": true}` lets a function embed text with the host's
/// embeddings API (`Supabase.ai.Session`), the operator's endpoint that embeds
/// entities, so queries and entities share one model. No user consent: the text
/// goes nowhere the operator did not already send entity text.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AiPermissions {
    #[serde(default)]
    pub embeddings: bool,
}

/// `users`: `{"act_as": true}` lets a function act for a user who consented
/// (`users.act_as:*`), e.g. once a public webhook has verified whose call it is.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UserPermissions {
    #[serde(default)]
    pub act_as: bool,
}

/// The one resource of `users.act_as`.
static ACT_AS_ANY: std::sync::LazyLock<Vec<String>> =
    std::sync::LazyLock::new(|| vec!["*".to_string()]);

/// `secrets`: the names a plugin reads (`["A", "B"]`), or which it reads and which
/// it writes as the user's own secrets (`{"read": ["A"], "write": ["A"]}`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SecretPermissions {
    pub read: Vec<String>,
    pub write: Vec<String>,
}

impl<'de> Deserialize<'de> for SecretPermissions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Split {
            #[serde(default)]
            read: Vec<String>,
            #[serde(default)]
            write: Vec<String>,
        }
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Names(Vec<String>),
            Split(Split),
        }
        Ok(
            match Form::deserialize(d).map_err(|_| {
                serde::de::Error::custom(
                    "permissions.secrets must be a list of names or {\"read\": [...], \"write\": [...]}",
                )
            })? {
                Form::Names(read) => SecretPermissions {
                    read,
                    write: Vec::new(),
                },
                Form::Split(s) => SecretPermissions {
                    read: s.read,
                    write: s.write,
                },
            },
        )
    }
}

/// Resource limits a plugin asks for; the function host caps them at its own maxima.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_mb: Option<u32>,
    pub cpu_ms: Option<u32>,
    pub wall_ms: Option<u32>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub permissions: Permissions,
    #[serde(default)]
    pub limits: Limits,
    /// Supabase's `verify_jwt`: false makes `/functions/v1/{name}` callable
    /// without a token (inbound webhooks: Twilio, Stripe, MS Graph); such a call
    /// acts as `anon`, and what the function may do is bounded by this manifest.
    #[serde(default = "yes")]
    pub verify_jwt: bool,
}

fn yes() -> bool {
    true
}

/// Most entries in one permission list.
const MAX_ENTRIES: usize = 100;

impl Manifest {
    /// Parses and validates a manifest; the error names the offending field.
    pub fn parse(value: serde_json::Value) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_value(value).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    /// The patterns declared for an action.
    pub fn declared(&self, action: Action) -> &[String] {
        let p = &self.permissions;
        match action {
            Action::EntitiesRead => &p.entities.read,
            Action::EntitiesWrite => &p.entities.write,
            Action::EventsEmit => &p.events.emit,
            Action::SecretsRead => &p.secrets.read,
            Action::SecretsWrite => &p.secrets.write,
            Action::NetworkFetch => &p.network,
            Action::UsersActAs if p.users.act_as => &ACT_AS_ANY,
            Action::UsersActAs => &[],
        }
    }

    /// Whether the manifest declares `action` on `resource` (a concrete resource
    /// or a pattern that one of the declared patterns covers).
    pub fn declares(&self, action: Action, resource: &str) -> bool {
        self.declared(action)
            .iter()
            .any(|pattern| action.covers(pattern, resource))
    }

    fn validate(&self) -> Result<(), String> {
        check_plugin_name(&self.name)?;
        check_version(&self.version)?;
        for action in Action::ALL {
            let list = self.declared(action);
            if list.len() > MAX_ENTRIES {
                return Err(format!(
                    "permissions for {action}: at most {MAX_ENTRIES} entries"
                ));
            }
            for entry in list {
                check_resource(action, entry, true)
                    .map_err(|reason| format!("permissions for {action}: {reason}"))?;
            }
        }
        let limits = [
            ("memory_mb", self.limits.memory_mb, 1024),
            ("cpu_ms", self.limits.cpu_ms, 60_000),
            ("wall_ms", self.limits.wall_ms, 600_000),
        ];
        for (name, value, max) in limits {
            if let Some(v) = value {
                if v == 0 || v > max {
                    return Err(format!("limits.{name}: {v} is not in 1..={max}"));
                }
            }
        }
        Ok(())
    }
}

/// Plugin names: like queue names (lowercase, digits, `-`, `_`), 1–63 bytes.
pub fn check_plugin_name(name: &str) -> Result<(), String> {
    if names::PLUGIN.accepts(name) {
        Ok(())
    } else {
        Err(format!(
            "name \"{name}\" must be 1 to {} lowercase letters, digits, - or _, starting with a letter",
            names::PLUGIN.max_len
        ))
    }
}

/// Versions are `MAJOR.MINOR.PATCH` with an optional `-pre` suffix.
fn check_version(version: &str) -> Result<(), String> {
    let core = version.split_once('-').map_or(version, |(core, _)| core);
    let parts: Vec<&str> = core.split('.').collect();
    let ok = version.len() <= 64
        && parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if ok {
        Ok(())
    } else {
        Err(format!("version \"{version}\" is not MAJOR.MINOR.PATCH"))
    }
}

/// Validates one resource (or, where `pattern`, a declared pattern) of an action.
pub fn check_resource(action: Action, value: &str, pattern: bool) -> Result<(), String> {
    let bad = |what: &str| Err(format!("\"{value}\" is not {what}"));
    match action {
        Action::EntitiesRead | Action::EntitiesWrite => {
            let ok = names::KIND.accepts(value);
            if ok {
                Ok(())
            } else {
                bad("an entity kind (lowercase letters, digits, _)")
            }
        }
        Action::EventsEmit => {
            if pattern {
                if let Some(domain) = value.strip_suffix(".*") {
                    return event_type::validate_domain(domain)
                        .map_err(|_| format!("\"{value}\" is not domain.* with a valid domain"));
                }
            }
            event_type::validate(value).map_err(|reason| format!("\"{value}\" {reason}"))
        }
        Action::SecretsRead | Action::SecretsWrite => {
            let ok = !value.is_empty()
                && value.len() <= 128
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if ok {
                Ok(())
            } else {
                bad("a secret name (letters, digits, _ - .)")
            }
        }
        Action::UsersActAs => {
            if value == "*" {
                Ok(())
            } else {
                bad("* (users.act_as has no other resource)")
            }
        }
        Action::NetworkFetch => match value.strip_prefix("*.").filter(|_| pattern) {
            // A wildcard covers the subdomains of a registrable-looking name: at
            // least two labels ending in a letter label, so neither `*.com` nor
            // `*.169.254` (link-local metadata addresses) passes.
            Some(suffix) => {
                let labels: Vec<&str> = suffix.split('.').collect();
                let tld_is_name = labels
                    .last()
                    .is_some_and(|l| l.chars().all(|c| c.is_ascii_lowercase()));
                if is_hostname(suffix) && labels.len() >= 2 && tld_is_name {
                    Ok(())
                } else {
                    bad("a wildcard over a domain such as *.example.com")
                }
            }
            None if is_hostname(value) => Ok(()),
            None => bad("a host name such as api.example.com (no scheme, port or path)"),
        },
    }
}

/// A DNS name or IPv4 address in lowercase, without scheme, port or path.
fn is_hostname(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sms() -> Manifest {
        Manifest::parse(json!({
            "name": "sms-sender", "version": "1.2.0",
            "permissions": {
                "entities": {"read": ["person"]},
                "events": {"emit": ["communication.MessageSent", "sms.*"]},
                "secrets": ["TWILIO_AUTH_TOKEN"],
                "network": ["api.twilio.com", "*.example.com"]
            }
        }))
        .unwrap()
    }

    #[test]
    fn declared_resources_are_covered() {
        let m = sms();
        assert!(m.declares(Action::EntitiesRead, "person"));
        assert!(!m.declares(Action::EntitiesWrite, "person"));
        assert!(m.declares(Action::EventsEmit, "communication.MessageSent"));
        assert!(!m.declares(Action::EventsEmit, "communication.CallStarted"));
        assert!(m.declares(Action::EventsEmit, "sms.MessageQueued"));
        assert!(!m.declares(Action::EventsEmit, "smsx.MessageQueued"));
        assert!(m.declares(Action::SecretsRead, "TWILIO_AUTH_TOKEN"));
        assert!(!m.declares(Action::SecretsRead, "OTHER"));
        assert!(!m.declares(Action::SecretsWrite, "TWILIO_AUTH_TOKEN"));
        assert!(m.declares(Action::NetworkFetch, "api.twilio.com"));
        assert!(m.declares(Action::NetworkFetch, "API.Twilio.com"));
        assert!(!m.declares(Action::NetworkFetch, "evil-twilio.com"));
        assert!(m.declares(Action::NetworkFetch, "a.example.com"));
        assert!(!m.declares(Action::NetworkFetch, "example.com"));
        assert!(!m.declares(Action::NetworkFetch, "aexample.com"));
        assert!(!m.declares(Action::NetworkFetch, "example.com.evil.org"));
    }

    #[test]
    fn embeddings_are_declared_or_not_there() {
        assert!(!sms().permissions.ai.embeddings);
        let m = Manifest::parse(json!({"name": "recall", "version": "1.0.0",
            "permissions": {"ai": {"embeddings": true}}}))
        .unwrap();
        assert!(m.permissions.ai.embeddings);
    }

    #[test]
    fn bad_manifests_name_the_field() {
        let cases = [
            (json!({"name": "Bad Name", "version": "1.0.0"}), "name"),
            (json!({"name": "ok", "version": "1"}), "version"),
            (
                json!({"name": "ok", "version": "1.0.0", "perms": {}}),
                "unknown field",
            ),
            (
                json!({"name": "ok", "version": "1.0.0", "permissions": {"network": ["https://x.com"]}}),
                "network.fetch",
            ),
            (
                json!({"name": "ok", "version": "1.0.0", "permissions": {"network": ["*.com"]}}),
                "network.fetch",
            ),
            (
                json!({"name": "ok", "version": "1.0.0", "permissions": {"network": ["*.169.254"]}}),
                "network.fetch",
            ),
            (
                json!({"name": "ok", "version": "1.0.0", "permissions": {"events": {"emit": ["nope"]}}}),
                "events.emit",
            ),
            (
                json!({"name": "ok", "version": "1.0.0", "permissions": {"entities": {"read": ["Person"]}}}),
                "entities.read",
            ),
            (
                json!({"name": "ok", "version": "1.0.0", "limits": {"memory_mb": 0}}),
                "limits.memory_mb",
            ),
            (
                json!({"name": "ok", "version": "1.0.0", "permissions": {"ai": {"chat": true}}}),
                "unknown field",
            ),
        ];
        for (manifest, expected) in cases {
            let err = Manifest::parse(manifest.clone()).unwrap_err();
            assert!(err.contains(expected), "{manifest}: {err}");
        }
    }

    #[test]
    fn actions_round_trip() {
        for a in Action::ALL {
            assert_eq!(Action::parse(a.name()), Some(a));
        }
        assert_eq!(Action::parse("db.drop"), None);
    }

    #[test]
    fn secrets_are_a_list_to_read_or_read_and_write_lists() {
        let m = Manifest::parse(json!({"name": "crm", "version": "1.0.0",
            "permissions": {"secrets": {"read": ["TOKEN"], "write": ["TOKEN", "REFRESH"]}}}))
        .unwrap();
        assert!(m.declares(Action::SecretsRead, "TOKEN"));
        assert!(!m.declares(Action::SecretsRead, "REFRESH"));
        assert!(m.declares(Action::SecretsWrite, "REFRESH"));
        for bad in [
            json!({"secrets": {"read": ["A"], "delete": ["A"]}}),
            json!({"secrets": "A"}),
            json!({"secrets": {"write": ["bad name"]}}),
        ] {
            let e = Manifest::parse(json!({"name": "crm", "version": "1.0.0", "permissions": bad}))
                .unwrap_err();
            assert!(e.contains("secrets"), "{e}");
        }
    }
}
