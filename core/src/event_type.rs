//! Event type names: `domain.PastTenseName`, e.g. `data.EntityCreated`.
//!
//! The past tense is what makes an event a fact ("CallStarted") rather than a
//! command ("StartCall"); consumers can rely on it having happened. The check is
//! on the last word of the PascalCase name: it ends in `-ed` or is an irregular
//! past participle.

/// Irregular past participles accepted as the last word of an event name.
const IRREGULAR: &[&str] = &[
    "Begun",
    "Bound",
    "Bought",
    "Brought",
    "Built",
    "Caught",
    "Chosen",
    "Come",
    "Cut",
    "Dealt",
    "Done",
    "Drawn",
    "Driven",
    "Fallen",
    "Felt",
    "Fought",
    "Found",
    "Frozen",
    "Given",
    "Gone",
    "Grown",
    "Held",
    "Hidden",
    "Hit",
    "Hung",
    "Kept",
    "Known",
    "Laid",
    "Led",
    "Left",
    "Lent",
    "Lost",
    "Made",
    "Meant",
    "Met",
    "Paid",
    "Put",
    "Quit",
    "Read",
    "Rewritten",
    "Ridden",
    "Risen",
    "Run",
    "Said",
    "Seen",
    "Sent",
    "Set",
    "Shaken",
    "Shown",
    "Shut",
    "Sold",
    "Sought",
    "Spent",
    "Split",
    "Spoken",
    "Spun",
    "Stolen",
    "Struck",
    "Sung",
    "Sworn",
    "Taken",
    "Taught",
    "Thrown",
    "Told",
    "Torn",
    "Understood",
    "Undone",
    "Upheld",
    "Woken",
    "Won",
    "Worn",
    "Written",
];

/// Longest accepted type name; NATS subjects are built from it.
pub const MAX_LEN: usize = 255;

/// Why a domain (the part before the dot, or of a `domain.*` pattern) is rejected.
pub fn validate_domain(domain: &str) -> Result<(), String> {
    if crate::names::DOMAIN.accepts(domain) {
        Ok(())
    } else {
        Err(format!(
            "domain \"{domain}\" must be lowercase letters, digits and _, starting with a letter"
        ))
    }
}

/// Why a type name is rejected; the message is shown to the caller as is.
pub fn validate(name: &str) -> Result<(), String> {
    if name.len() > MAX_LEN {
        return Err(format!("is {} bytes, the limit is {MAX_LEN}", name.len()));
    }
    let Some((domain, event)) = name.split_once('.') else {
        return Err("must be domain.PastTenseName, e.g. data.EntityCreated".into());
    };
    validate_domain(domain)?;
    let event_ok = event.starts_with(|c: char| c.is_ascii_uppercase())
        && event.chars().all(|c| c.is_ascii_alphanumeric());
    if !event_ok {
        return Err(format!(
            "name \"{event}\" must be PascalCase letters and digits, e.g. EntityCreated"
        ));
    }
    let last = last_word(event);
    if !(last.ends_with("ed") || IRREGULAR.contains(&last)) {
        return Err(format!(
            "name \"{event}\" must be in the past tense (it is a fact, not a command): \
             \"{last}\" is not, e.g. OrderPlaced, MessageSent"
        ));
    }
    Ok(())
}

/// The last PascalCase word: `EntityCreated` → `Created`.
fn last_word(pascal: &str) -> &str {
    let start = pascal
        .char_indices()
        .rev()
        .find(|(_, c)| c.is_ascii_uppercase())
        .map(|(i, _)| i)
        .unwrap_or(0);
    &pascal[start..]
}

#[cfg(test)]
mod tests {
    use super::validate;

    #[test]
    fn accepts_past_tense_facts() {
        for ok in [
            "data.EntityCreated",
            "connector.DataReceived",
            "communication.CallStarted",
            "rules.RuleFired",
            "jobs.JobFailed",
            "messaging.MessageSent",
            "billing.InvoicePaid",
            "v2_api.Ping2Received",
        ] {
            assert_eq!(validate(ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_commands_and_bad_shapes() {
        for bad in [
            "data.CreateEntity",
            "EntityCreated",
            "Data.EntityCreated",
            "data.entityCreated",
            "data.Entity-Created",
            "data.",
            ".EntityCreated",
            "data.a.EntityCreated",
            "",
        ] {
            assert!(validate(bad).is_err(), "{bad} should be rejected");
        }
        assert!(validate(&format!("d.{}Created", "X".repeat(300))).is_err());
    }
}
