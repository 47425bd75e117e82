-- Rules: per-user JsonLogic conditions on events, evaluated in Rust (src/rules) in
-- the transaction that emitted the event, with their actions, the user's state
-- they read and write, and a record of every firing.
-- Writes go through spine.save_rule / delete_rule / set_state (validated there).

CREATE TABLE spine.rules (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id   uuid        NOT NULL,
    name       text        NOT NULL,
    on_event   text        NOT NULL,
    condition  jsonb       NOT NULL,
    actions    jsonb       NOT NULL,
    enabled    boolean     NOT NULL DEFAULT true,
    priority   integer     NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, name)
);
COMMENT ON TABLE spine.rules IS
    'Users'' rules: on_event (type or domain.*), a JsonLogic condition over {event, entity, state}, and actions. Save with spine.save_rule.';
COMMENT ON COLUMN spine.rules.priority IS 'Higher runs first among the rules matching one event.';
-- Backends keep compiled rules (src/rules/cache.rs); any change reaches them, also
-- one made with plain SQL or under session_replication_role = replica.
CREATE TRIGGER rules_changed
    AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spine.rules
    FOR EACH STATEMENT EXECUTE FUNCTION spine.cached_table_changed();
ALTER TABLE spine.rules ENABLE ALWAYS TRIGGER rules_changed;

CREATE TABLE spine.state (
    owner_id   uuid        NOT NULL,
    key        text        NOT NULL,
    value      jsonb       NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (owner_id, key)
);
COMMENT ON TABLE spine.state IS
    'A user''s key/value state (e.g. location = "Work") that rules read as state.<key> and set_state actions write.';

CREATE TABLE spine.rule_firings (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    rule_id    uuid        NOT NULL,
    owner_id   uuid        NOT NULL,
    event_id   uuid        NOT NULL,
    event_type text        NOT NULL,
    -- The event's correlation id: the loop guard counts a chain's firings by it.
    correlation_id uuid    NOT NULL,
    depth      integer     NOT NULL DEFAULT 0,
    inputs     jsonb       NOT NULL DEFAULT '{}',
    actions    jsonb       NOT NULL DEFAULT '[]',
    -- Why the loop guard stopped the rule on this event (it matched but did not
    -- fire; no actions ran); NULL for a firing.
    stopped    text,
    fired_at   timestamptz NOT NULL DEFAULT now(),
    -- A replayed event never fires a rule twice.
    UNIQUE (rule_id, event_id)
);
CREATE INDEX rule_firings_event_idx ON spine.rule_firings (event_id);
CREATE INDEX rule_firings_owner_idx ON spine.rule_firings (owner_id, id);
CREATE INDEX rule_firings_correlation_idx ON spine.rule_firings (correlation_id);
COMMENT ON TABLE spine.rule_firings IS
    'Every firing: the rule, the event, the inputs its condition read, the actions taken (with job and event ids); and every match the loop guard stopped (stopped = why).';
COMMENT ON COLUMN spine.rule_firings.stopped IS 'Set when the loop guard stopped the rule on this event: the reason (spine.rules_max_depth or rules_max_chain_firings); its actions did not run.';
COMMENT ON COLUMN spine.rule_firings.depth IS 'How often the same rule had fired on this event''s causal ancestors (loop guard: spine.rules_max_depth).';

ALTER TABLE spine.rules ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.state ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.rule_firings ENABLE ROW LEVEL SECURITY;
CREATE POLICY rules_own_rows ON spine.rules FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY state_own_rows ON spine.state FOR SELECT TO authenticated USING (owner_id = auth.uid());
CREATE POLICY rule_firings_own_rows ON spine.rule_firings FOR SELECT TO authenticated USING (owner_id = auth.uid());
REVOKE ALL ON spine.rules, spine.state, spine.rule_firings FROM PUBLIC;
GRANT SELECT ON spine.rules, spine.state, spine.rule_firings TO authenticated, service_role;
