-- Policy: plugins with their manifests, and owners' consents.
--
-- A plugin acts for an owner only within what its manifest declares AND what the
-- owner consented to; spine.authorize(principal, action, resource) (src/policy) is
-- the one place that decides, and it writes each decision to the audit log.
-- Writes go through SECURITY DEFINER functions (register_plugin,
-- set_plugin_enabled, grant_consent, revoke_consent), each audited.

CREATE TABLE spine.plugins (
    name          text        PRIMARY KEY,
    version       text        NOT NULL,
    manifest      jsonb       NOT NULL,
    enabled       boolean     NOT NULL DEFAULT true,
    registered_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.plugins IS
    'Registered plugins and their manifests (what they may ever ask for). Write with spine.register_plugin / spine.set_plugin_enabled.';
COMMENT ON COLUMN spine.plugins.manifest IS
    'Validated manifest: name, version, permissions {entities {read, write}, events {emit}, secrets, network}, limits.';

CREATE TABLE spine.consents (
    id         bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    owner_id   uuid        NOT NULL,
    plugin     text        NOT NULL REFERENCES spine.plugins (name) ON UPDATE CASCADE ON DELETE CASCADE,
    scope      text        NOT NULL,
    granted_at timestamptz NOT NULL DEFAULT now(),
    revoked_at timestamptz,
    CHECK (revoked_at IS NULL OR revoked_at >= granted_at)
);
-- One active grant per scope; revoked rows stay as history.
CREATE UNIQUE INDEX consents_active_idx ON spine.consents (owner_id, plugin, scope)
    WHERE revoked_at IS NULL;
CREATE INDEX consents_plugin_idx ON spine.consents (plugin);
COMMENT ON TABLE spine.consents IS
    'What each owner allowed each plugin: scopes action:resource, action:* or *. Write with spine.grant_consent / spine.revoke_consent.';

ALTER TABLE spine.plugins ENABLE ROW LEVEL SECURITY;
ALTER TABLE spine.consents ENABLE ROW LEVEL SECURITY;
-- Users see which plugins exist and what they ask for (to decide on consent).
CREATE POLICY plugins_readable ON spine.plugins FOR SELECT TO authenticated USING (true);
CREATE POLICY consents_own_rows ON spine.consents
    FOR SELECT TO authenticated USING (owner_id = auth.uid());
REVOKE ALL ON spine.plugins, spine.consents FROM PUBLIC;
GRANT SELECT ON spine.plugins, spine.consents TO authenticated, service_role;

-- Per-plugin health, reported by the function hosts (deltas, about once a second
-- per process): invocations, failures, limit hits, time, the current run of
-- failures in a row. A plugin whose run reaches the host's limit is disabled
-- (audited as plugin.auto_disabled) until service_role enables it again.
CREATE TABLE spine.plugin_health (
    plugin            text        PRIMARY KEY REFERENCES spine.plugins (name) ON UPDATE CASCADE ON DELETE CASCADE,
    invocations       bigint      NOT NULL DEFAULT 0,
    failures          bigint      NOT NULL DEFAULT 0,
    limit_hits        bigint      NOT NULL DEFAULT 0,
    total_ms          double precision NOT NULL DEFAULT 0,
    failures_in_a_row integer     NOT NULL DEFAULT 0,
    last_error        text,
    last_error_at     timestamptz,
    last_ok_at        timestamptz,
    auto_disabled_at  timestamptz,
    updated_at        timestamptz NOT NULL DEFAULT now()
);
COMMENT ON TABLE spine.plugin_health IS
    'Per plugin: invocations, failures (threw, a limit, a bad module, a 5xx answer), limit hits, total time, failures in a row, the last error; auto_disabled_at when the host disabled it.';
ALTER TABLE spine.plugin_health ENABLE ROW LEVEL SECURITY;
REVOKE ALL ON spine.plugin_health FROM PUBLIC;
GRANT SELECT ON spine.plugin_health TO service_role;

CREATE FUNCTION spine.record_plugin_health(
    plugin_name text,
    invocations integer,
    failures integer,
    limit_hits integer,
    total_ms double precision,
    failures_in_a_row integer,
    last_error text DEFAULT NULL,
    disable_after integer DEFAULT 0
) RETURNS boolean
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    streak integer;
BEGIN
    IF invocations IS NULL OR invocations < 0 OR failures < 0 OR limit_hits < 0 OR failures_in_a_row < 0 THEN
        RAISE EXCEPTION 'counts must be non-negative' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM spine.plugins p WHERE p.name = plugin_name) THEN
        RETURN false;  -- dropped meanwhile
    END IF;
    INSERT INTO spine.plugin_health AS h
        (plugin, invocations, failures, limit_hits, total_ms, failures_in_a_row,
         last_error, last_error_at, last_ok_at)
    VALUES (plugin_name, record_plugin_health.invocations, record_plugin_health.failures,
            record_plugin_health.limit_hits, coalesce(record_plugin_health.total_ms, 0),
            record_plugin_health.failures_in_a_row, left(record_plugin_health.last_error, 500),
            CASE WHEN record_plugin_health.failures > 0 THEN now() END,
            CASE WHEN record_plugin_health.invocations > record_plugin_health.failures THEN now() END)
    ON CONFLICT (plugin) DO UPDATE SET
        invocations = h.invocations + excluded.invocations,
        failures = h.failures + excluded.failures,
        limit_hits = h.limit_hits + excluded.limit_hits,
        total_ms = h.total_ms + excluded.total_ms,
        failures_in_a_row = excluded.failures_in_a_row,
        last_error = coalesce(excluded.last_error, h.last_error),
        last_error_at = coalesce(excluded.last_error_at, h.last_error_at),
        last_ok_at = coalesce(excluded.last_ok_at, h.last_ok_at),
        updated_at = now()
    RETURNING h.failures_in_a_row INTO streak;
    IF coalesce(disable_after, 0) > 0 AND streak >= disable_after THEN
        UPDATE spine.plugins p SET enabled = false, updated_at = now()
         WHERE p.name = plugin_name AND p.enabled;
        IF FOUND THEN
            UPDATE spine.plugin_health h SET auto_disabled_at = now() WHERE h.plugin = plugin_name;
            PERFORM spine.audit('plugin.auto_disabled', 'plugin:' || plugin_name,
                jsonb_build_object('failures_in_a_row', streak, 'last_error', left(last_error, 500)));
            RETURN true;
        END IF;
    END IF;
    RETURN false;
END
$$;
COMMENT ON FUNCTION spine.record_plugin_health(text, integer, integer, integer, double precision, integer, text, integer) IS
    'Adds a function host''s counts for a plugin to spine.plugin_health; disables the plugin (audited) when its failures in a row reach disable_after (> 0). True when this call disabled it.';
