//! The stream map: which JetStream stream, under which subject prefix, each
//! event goes to (`SPINE_RELAY_STREAMS`). The hub's consumers read
//! `platform-events`, `connector-data` and `audit-log`; by default every event
//! goes to one stream, `SPINE`, as `spine.<type>`.
//!
//! `connector.*=connector-data, audit.*=audit-log, *=platform-events` routes by
//! event type — an exact type, `domain.*`, or `*` — the first match winning.
//! Each stream captures `<prefix>.>`; the prefix is the stream name in lower
//! case unless given after a colon (`*=platform-events:hub.events`). An event no
//! route matches goes to `SPINE_RELAY_STREAM` as `spine.<type>`.
//!
//! An event must always reach the same stream: `Nats-Msg-Id` deduplication, and
//! the relay's ordering guard (`Nats-Expected-Last-Msg-Id`, stream-wide), are per
//! stream. So the relay is the only publisher of its streams, and changing the
//! map while a batch is in flight may deliver its events twice (once per stream).

/// Where events go: a stream and the prefix of its subjects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stream {
    pub name: String,
    pub prefix: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    Exact(String),
    /// `domain.` of `domain.*`.
    Domain(String),
    All,
}

impl Pattern {
    fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::Exact(t) => t == event_type,
            Pattern::Domain(prefix) => event_type.starts_with(prefix.as_str()),
            Pattern::All => true,
        }
    }
}

/// Routes in order, and the streams they name (each once).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamMap {
    routes: Vec<(Pattern, usize)>,
    streams: Vec<Stream>,
    /// Subjects end with the event's owner (`SPINE_RELAY_OWNER_SUBJECTS`).
    owner_subjects: bool,
}

/// The last subject token of an event without an owner, when subjects carry it.
pub const NO_OWNER: &str = "system";

impl StreamMap {
    /// Every event to `stream`, as `spine.<type>` (Spine's default).
    pub fn single(stream: &str) -> StreamMap {
        StreamMap {
            routes: vec![(Pattern::All, 0)],
            streams: vec![Stream {
                name: stream.to_string(),
                prefix: "spine".into(),
            }],
            owner_subjects: false,
        }
    }

    /// Reads `SPINE_RELAY_STREAMS`; `default_stream` takes what no route matches.
    pub fn parse(spec: &str, default_stream: &str) -> Result<StreamMap, String> {
        let mut map = StreamMap {
            routes: Vec::new(),
            streams: Vec::new(),
            owner_subjects: false,
        };
        for entry in spec.split(',').map(str::trim).filter(|e| !e.is_empty()) {
            let (pattern, target) = entry
                .split_once('=')
                .ok_or_else(|| format!("\"{entry}\" is not pattern=stream"))?;
            let pattern = parse_pattern(pattern.trim())?;
            let (name, prefix) = match target.trim().split_once(':') {
                Some((name, prefix)) => (name.trim(), prefix.trim().to_string()),
                None => (target.trim(), target.trim().to_ascii_lowercase()),
            };
            check_stream_name(name)?;
            check_prefix(&prefix)?;
            let index = map.stream_index(name, &prefix)?;
            map.routes.push((pattern, index));
        }
        if !map.routes.iter().any(|(p, _)| *p == Pattern::All) {
            let index = map.stream_index(default_stream, "spine")?;
            map.routes.push((Pattern::All, index));
        }
        map.check_prefixes_apart()?;
        Ok(map)
    }

    /// The stream (by index) and subject of an event of `event_type`.
    pub fn route(&self, event_type: &str) -> (usize, String) {
        let index = self
            .routes
            .iter()
            .find(|(p, _)| p.matches(event_type))
            .map_or(0, |(_, i)| *i);
        let prefix = &self.streams[index].prefix;
        (index, format!("{prefix}.{event_type}"))
    }

    /// Subjects end with the event's owner from now on.
    pub fn with_owner_subjects(mut self, on: bool) -> StreamMap {
        self.owner_subjects = on;
        self
    }

    /// The stream (by index) and subject of an event of `event_type` owned by
    /// `owner`: [`StreamMap::route`]'s, with the owner's id (or [`NO_OWNER`]) as
    /// the last token when subjects carry owners. Event types are always two
    /// tokens, so `<prefix>.*.*.<id>` is exactly one user's events.
    pub fn subject(&self, event_type: &str, owner: Option<uuid::Uuid>) -> (usize, String) {
        let (index, subject) = self.route(event_type);
        if !self.owner_subjects {
            return (index, subject);
        }
        let owner = owner.map_or_else(|| NO_OWNER.to_string(), |o| o.to_string());
        (index, format!("{subject}.{owner}"))
    }

    pub fn streams(&self) -> &[Stream] {
        &self.streams
    }

    fn stream_index(&mut self, name: &str, prefix: &str) -> Result<usize, String> {
        if let Some(i) = self.streams.iter().position(|s| s.name == name) {
            if self.streams[i].prefix != prefix {
                return Err(format!(
                    "stream {name} is given two prefixes, {} and {prefix}",
                    self.streams[i].prefix
                ));
            }
            return Ok(i);
        }
        self.streams.push(Stream {
            name: name.to_string(),
            prefix: prefix.to_string(),
        });
        Ok(self.streams.len() - 1)
    }

    /// JetStream refuses two streams whose subjects overlap: `a.>` and `a.b.>` do.
    fn check_prefixes_apart(&self) -> Result<(), String> {
        for (i, a) in self.streams.iter().enumerate() {
            for b in &self.streams[i + 1..] {
                let (x, y) = (format!("{}.", a.prefix), format!("{}.", b.prefix));
                if x.starts_with(&y) || y.starts_with(&x) {
                    return Err(format!(
                        "streams {} ({}.>) and {} ({}.>) would capture the same subjects",
                        a.name, a.prefix, b.name, b.prefix
                    ));
                }
            }
        }
        Ok(())
    }
}

fn parse_pattern(pattern: &str) -> Result<Pattern, String> {
    if pattern == "*" {
        return Ok(Pattern::All);
    }
    match pattern.strip_suffix(".*") {
        Some(domain) => spine_core::event_type::validate_domain(domain)
            .map(|()| Pattern::Domain(format!("{domain}.")))
            .map_err(|e| format!("pattern \"{pattern}\": {e}")),
        None => spine_core::event_type::validate(pattern)
            .map(|()| Pattern::Exact(pattern.to_string()))
            .map_err(|e| format!("pattern \"{pattern}\" {e}")),
    }
}

/// JetStream stream names: no spaces, dots, wildcards or path separators.
fn check_stream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match ok {
        true => Ok(()),
        false => Err(format!(
            "stream name \"{name}\" must be 1 to 64 letters, digits, - and _"
        )),
    }
}

/// Subject tokens without wildcards or whitespace.
fn check_prefix(prefix: &str) -> Result<(), String> {
    let ok = !prefix.is_empty()
        && prefix.split('.').all(|token| {
            !token.is_empty()
                && token
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
    match ok {
        true => Ok(()),
        false => Err(format!(
            "subject prefix \"{prefix}\" must be dot-separated tokens of letters, digits, - and _"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hub() -> StreamMap {
        StreamMap::parse(
            "connector.*=connector-data, audit.*=audit-log, *=platform-events",
            "SPINE",
        )
        .unwrap()
    }

    #[test]
    fn subjects_may_end_with_the_owner() {
        let owner = uuid::Uuid::parse_str("6f1d3c2e-0d7a-4a55-9c1e-2b8f5a0e9d11").unwrap();
        assert_eq!(
            hub().subject("data.EntityCreated", Some(owner)),
            (2, "platform-events.data.EntityCreated".into()),
            "off by default"
        );
        let map = hub().with_owner_subjects(true);
        assert_eq!(
            map.subject("data.EntityCreated", Some(owner)),
            (2, format!("platform-events.data.EntityCreated.{owner}"))
        );
        assert_eq!(
            map.subject("audit.EntriesSealed", None),
            (1, "audit-log.audit.EntriesSealed.system".into())
        );
    }

    #[test]
    fn the_first_matching_route_wins() {
        let map = hub();
        assert_eq!(
            map.route("connector.ContactImported"),
            (0, "connector-data.connector.ContactImported".into())
        );
        assert_eq!(
            map.route("audit.EntriesSealed"),
            (1, "audit-log.audit.EntriesSealed".into())
        );
        assert_eq!(
            map.route("data.EntityCreated"),
            (2, "platform-events.data.EntityCreated".into())
        );
        assert_eq!(map.streams().len(), 3);
    }

    #[test]
    fn unmatched_events_go_to_the_default_stream() {
        let map =
            StreamMap::parse("audit.*=audit-log, shop.OrderPlaced=orders:shop", "SPINE").unwrap();
        assert_eq!(
            map.route("shop.OrderPlaced"),
            (1, "shop.shop.OrderPlaced".into())
        );
        assert_eq!(
            map.route("shop.OrderShipped"),
            (2, "spine.shop.OrderShipped".into())
        );
        assert_eq!(map.streams()[2].name, "SPINE");
        assert_eq!(
            StreamMap::parse("", "SPINE").unwrap(),
            StreamMap::single("SPINE")
        );
    }

    #[test]
    fn one_stream_may_take_several_patterns() {
        let map = StreamMap::parse("audit.*=log, vault.*=log, *=events", "SPINE").unwrap();
        assert_eq!(map.route("vault.SecretRotated").0, 0);
        assert_eq!(map.streams().len(), 2);
    }

    #[test]
    fn bad_maps_say_what_is_wrong() {
        for (spec, says) in [
            ("audit.*", "pattern=stream"),
            ("audit=log", "domain.PastTenseName"),
            ("Audit.*=log", "domain"),
            ("*=my.stream", "stream name"),
            ("*=log:a.*", "subject prefix"),
            ("audit.*=a:x, *=b:x.y", "same subjects"),
            ("audit.*=a:x, vault.*=a:y", "two prefixes"),
            ("audit.*=s:spine", "same subjects"),
        ] {
            let err = StreamMap::parse(spec, "SPINE").unwrap_err();
            assert!(err.contains(says), "{spec}: {err}");
        }
    }
}
