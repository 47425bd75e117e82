//! Identifier rules: which names Spine accepts for entity kinds, plugins, queues,
//! webhooks and event domains. Every kind of name starts with a lowercase letter
//! and continues with lowercase letters, digits and a few extra characters; they
//! differ only in those extras and in their length limit.
//!
//! The rules live here, once; each caller keeps its own error message (the
//! messages are part of the SQL API and tested as such).

/// One kind of name: its length limit and the characters allowed beside
/// lowercase letters and digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NameRule {
    /// Longest accepted name, in bytes.
    pub max_len: usize,
    /// Characters allowed besides `a-z` and `0-9` (never as the first character).
    pub extra: &'static str,
}

/// Entity kinds, source names and the kinds a manifest names: `person`, `call_log`.
pub const KIND: NameRule = NameRule {
    max_len: 63,
    extra: "_",
};

/// Plugin (edge function) names: `sms-sender`, `crm_sync`.
pub const PLUGIN: NameRule = NameRule {
    max_len: 63,
    extra: "_-",
};

/// Queue names: `realtime`, `sms-out`, `crm.sync`.
pub const QUEUE: NameRule = NameRule {
    max_len: 63,
    extra: "_-.",
};

/// Database webhook names (they prefix trigger names, hence shorter).
pub const WEBHOOK: NameRule = NameRule {
    max_len: 40,
    extra: "_",
};

/// The domain of an event type (`data` in `data.EntityCreated`).
pub const DOMAIN: NameRule = NameRule {
    max_len: 254,
    extra: "_",
};

impl NameRule {
    /// Whether `name` is 1 to `max_len` bytes, starts with a lowercase letter and
    /// holds only lowercase letters, digits and the rule's extra characters.
    pub fn accepts(&self, name: &str) -> bool {
        !name.is_empty()
            && name.len() <= self.max_len
            && name.starts_with(|c: char| c.is_ascii_lowercase())
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || self.extra.contains(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_rule_takes_its_extras_only() {
        assert!(KIND.accepts("call_log"));
        assert!(!KIND.accepts("call-log"));
        assert!(PLUGIN.accepts("sms-sender_2"));
        assert!(!PLUGIN.accepts("sms.sender"));
        assert!(QUEUE.accepts("crm.sync-2_x"));
        assert!(WEBHOOK.accepts("on_insert"));
        assert!(!WEBHOOK.accepts("on-insert"));
    }

    #[test]
    fn first_character_is_a_letter_and_length_is_bounded() {
        for rule in [KIND, PLUGIN, QUEUE, WEBHOOK, DOMAIN] {
            assert!(!rule.accepts(""));
            assert!(!rule.accepts("_a"));
            assert!(!rule.accepts("1a"));
            assert!(!rule.accepts("Abc"));
            assert!(rule.accepts(&"a".repeat(rule.max_len)));
            assert!(!rule.accepts(&"a".repeat(rule.max_len + 1)));
        }
    }
}
