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
