//! Compiled rules, cached per backend and per owner.
//!
//! A backend is one thread, so the cache is a `thread_local!`. Every change to
//! `spine.rules` — through `save_rule`/`delete_rule` or plain SQL — fires the
//! table's statement trigger (see [`crate::invalidation`]); every backend sees the
//! change when it commits (and this one at its next command), and the cache starts
//! over. So an event never meets a stale rule, and an unchanged rule set costs one
//! flag check per event.

use super::actions::{self, Action};
use crate::error::{internal, SpineError};
use crate::invalidation::{self, Watched};
use pgrx::prelude::*;
use pgrx::{JsonB, Uuid};
use serde_json::Value;
use spine_core::rules::guard::{Guard, GuardIndex};
use spine_core::rules::jsonlogic::Expr;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// Which events a rule listens to: one type, or every type of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pattern {
    Exact(String),
    Domain(String),
}

impl Pattern {
    pub fn parse(on_event: &str) -> Result<Pattern, String> {
        match on_event.strip_suffix(".*") {
            Some(domain) => {
                spine_core::event_type::validate_domain(domain).map_err(|_| {
                    format!("on_event \"{on_event}\" is not domain.* with a valid domain")
                })?;
                Ok(Pattern::Domain(format!("{domain}.")))
            }
            None => spine_core::event_type::validate(on_event)
                .map(|()| Pattern::Exact(on_event.to_string()))
                .map_err(|reason| format!("on_event \"{on_event}\" {reason}")),
        }
    }

    pub fn matches(&self, event_type: &str) -> bool {
        match self {
            Pattern::Exact(t) => t == event_type,
            Pattern::Domain(prefix) => event_type.starts_with(prefix.as_str()),
        }
    }
}

/// A rule ready to evaluate.
#[derive(Debug)]
pub struct Rule {
    pub id: Uuid,
    pub name: String,
    pub on_event: String,
    pub pattern: Pattern,
    pub condition: Expr,
    pub actions: Vec<Action>,
    /// The var paths the condition reads: recorded with each firing.
    pub inputs: Vec<String>,
    /// A test of the event the condition needs (`event.data.kind == "x"`), by
    /// which [`OwnerSet::select`] skips it for events holding another value.
    pub guard: Option<Guard>,
}

impl Rule {
    /// Compiles a stored or submitted rule; the error names what is wrong.
    pub fn compile(
        id: Uuid,
        name: String,
        on_event: String,
        condition: &Value,
        actions: &Value,
    ) -> Result<Rule, String> {
        let pattern = Pattern::parse(&on_event)?;
        let condition = Expr::compile(condition).map_err(|e| format!("condition: {e}"))?;
        let actions = actions::parse(actions)?;
        let mut inputs = Vec::new();
        condition.var_paths(&mut inputs);
        for path in &inputs {
            let root = path.split('.').next().unwrap_or_default();
            if !path.is_empty() && !spine_core::rules::template::ROOTS.contains(&root) {
                return Err(format!(
                    "condition: var \"{path}\" must start with event, entity or state"
                ));
            }
        }
        let guard = Guard::of(&condition, "event");
        Ok(Rule {
            id,
            name,
            on_event,
            pattern,
            condition,
            actions,
            inputs,
            guard,
        })
    }
}

/// Most owners whose rules one backend keeps; beyond it the cache starts over.
const MAX_OWNERS: usize = 10_000;

/// One owner's enabled rules, in evaluation order, indexed by their guards.
pub struct OwnerSet {
    pub rules: Vec<Rc<Rule>>,
    index: GuardIndex,
}

impl OwnerSet {
    fn new(rules: Vec<Rc<Rule>>) -> OwnerSet {
        let index = GuardIndex::new(rules.iter().map(|r| r.guard.as_ref()));
        OwnerSet { rules, index }
    }

    /// Whether any rule listens to `event_type` (most events: none does).
    pub fn listens_to(&self, event_type: &str) -> bool {
        self.rules.iter().any(|r| r.pattern.matches(event_type))
    }

    /// The rules an event of `event_type` may match, in evaluation order:
    /// those listening to the type whose guard `ctx` (`{"event": …}`) does not
    /// rule out.
    pub fn select(&self, event_type: &str, ctx: &Value) -> Vec<Rc<Rule>> {
        self.index
            .select(ctx)
            .into_iter()
            .map(|i| &self.rules[i])
            .filter(|r| r.pattern.matches(event_type))
            .cloned()
            .collect()
    }
}

pub type OwnerRules = Rc<OwnerSet>;

thread_local! {
    static OWNERS: RefCell<HashMap<[u8; 16], OwnerRules>> = RefCell::new(HashMap::new());
}

/// The enabled rules of `owner`, highest priority first (then by name).
///
/// Under REPEATABLE READ or SERIALIZABLE the rules are read with the
/// transaction's snapshot, which may predate a change other sessions see: such a
/// read is used for this transaction only, never cached.
pub fn rules_of(owner: Uuid) -> Result<OwnerRules, SpineError> {
    if crate::spi_ext::snapshot_per_transaction() {
        return Ok(Rc::new(OwnerSet::new(load(owner)?)));
    }
    if invalidation::changed_since_last_look(Watched::Rules)? {
        OWNERS.with(|o| o.borrow_mut().clear());
    }
    let key = *owner.as_bytes();
    if let Some(found) = OWNERS.with(|o| o.borrow().get(&key).cloned()) {
        return Ok(found);
    }
    let loaded = Rc::new(OwnerSet::new(load(owner)?));
    OWNERS.with(|o| {
        let mut o = o.borrow_mut();
        if o.len() >= MAX_OWNERS {
            o.clear();
        }
        o.insert(key, loaded.clone());
    });
    Ok(loaded)
}

fn load(owner: Uuid) -> Result<Vec<Rc<Rule>>, SpineError> {
    Spi::connect(|client| {
        let rows = client
            .select(
                "SELECT id, name, on_event, condition, actions FROM spine.rules \
                 WHERE owner_id = $1 AND enabled ORDER BY priority DESC, name",
                None,
                &[owner.into()],
            )
            .map_err(internal("rules: load"))?;
        let mut rules = Vec::new();
        for row in rows {
            let id: Uuid = row
                .get(1)
                .map_err(internal("rules: load"))?
                .ok_or_else(|| SpineError::Internal {
                    context: "rules: load",
                    message: "rule without id".into(),
                })?;
            let name: String = row
                .get(2)
                .map_err(internal("rules: load"))?
                .unwrap_or_default();
            let on_event: String = row
                .get(3)
                .map_err(internal("rules: load"))?
                .unwrap_or_default();
            let condition: Option<JsonB> = row.get(4).map_err(internal("rules: load"))?;
            let actions: Option<JsonB> = row.get(5).map_err(internal("rules: load"))?;
            let rule = Rule::compile(
                id,
                name.clone(),
                on_event,
                &condition.map_or(Value::Bool(true), |c| c.0),
                &actions.map_or(Value::Null, |a| a.0),
            )
            .map_err(|reason| SpineError::Internal {
                context: "rules: stored rule no longer compiles",
                message: format!("{name}: {reason}"),
            })?;
            rules.push(Rc::new(rule));
        }
        Ok(rules)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let exact = Pattern::parse("communication.CallStarted").unwrap();
        assert!(exact.matches("communication.CallStarted"));
        assert!(!exact.matches("communication.CallEnded"));
        let domain = Pattern::parse("communication.*").unwrap();
        assert!(domain.matches("communication.CallEnded"));
        assert!(!domain.matches("communicationx.CallEnded"));
        assert!(Pattern::parse("Communication.*").is_err());
        assert!(Pattern::parse("call").is_err());
        assert!(Pattern::parse("*").is_err());
    }
}
