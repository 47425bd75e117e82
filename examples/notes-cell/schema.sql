-- notes-cell: a notes service for the cells platform, on Spine.
-- Applied as the database owner (the example's walkthrough and test). Idempotent.
SET client_min_messages = warning;

CREATE TABLE IF NOT EXISTS public.notes (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id   uuid NOT NULL DEFAULT auth.uid(),
    title      text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    body       text NOT NULL DEFAULT '',
    tags       text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.notes ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS notes_owner ON public.notes;
CREATE POLICY notes_owner ON public.notes
    FOR ALL TO authenticated USING (owner_id = auth.uid()) WITH CHECK (owner_id = auth.uid());
GRANT SELECT, INSERT ON public.notes TO authenticated;
CREATE INDEX IF NOT EXISTS notes_owner_created ON public.notes (owner_id, created_at DESC);

-- The store's verbs (NATS `notes_store.*`, served by Spine's worker as the
-- caller: RLS decides). Each takes the request's data and answers JSON.
CREATE OR REPLACE FUNCTION public.notes_create(data jsonb) RETURNS jsonb
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    note public.notes;
BEGIN
    INSERT INTO public.notes (title, body, tags)
    VALUES (data->>'title', coalesce(data->>'body', ''),
            coalesce(ARRAY(SELECT jsonb_array_elements_text(data->'tags')), '{}'))
    RETURNING * INTO note;
    -- The request's chain: Spine sets the cause and correlation from the envelope.
    PERFORM spine.emit('notes.NoteCreated', jsonb_build_object('id', note.id, 'title', note.title),
                       'note/' || note.id);
    RETURN to_jsonb(note);
END
$$;

-- NULL for a note the caller cannot see: Spine answers NOT_FOUND.
CREATE OR REPLACE FUNCTION public.notes_get(data jsonb) RETURNS jsonb
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_jsonb(n) FROM public.notes n WHERE n.id = (data->>'id')::uuid
$$;

CREATE OR REPLACE FUNCTION public.notes_list(data jsonb) RETURNS jsonb
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $$
    SELECT coalesce(jsonb_agg(to_jsonb(n) ORDER BY n.created_at DESC, n.id), '[]')
      FROM (SELECT * FROM public.notes
             ORDER BY created_at DESC, id
             LIMIT least(coalesce((data->>'limit')::int, 50), 500)) n
$$;

-- The key share links are signed with, from the vault: for the service (its
-- service_role token) only, never for users.
CREATE OR REPLACE FUNCTION public.notes_share_key(data jsonb) RETURNS jsonb
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT to_jsonb(decrypted_secret) FROM vault.decrypted_secrets WHERE name = 'NOTES_SHARE_KEY'
$$;

REVOKE EXECUTE ON FUNCTION public.notes_create(jsonb), public.notes_get(jsonb),
    public.notes_list(jsonb), public.notes_share_key(jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.notes_create(jsonb), public.notes_get(jsonb),
    public.notes_list(jsonb) TO authenticated;
GRANT EXECUTE ON FUNCTION public.notes_share_key(jsonb) TO service_role;

SELECT spine.expose_service('notes_store', 'create', 'public.notes_create(jsonb)'),
       spine.expose_service('notes_store', 'get', 'public.notes_get(jsonb)'),
       spine.expose_service('notes_store', 'list', 'public.notes_list(jsonb)'),
       spine.expose_service('notes_store', 'share_key', 'public.notes_share_key(jsonb)');

-- The share key, made once.
SELECT vault.create_secret(replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''), 'NOTES_SHARE_KEY',
                           'notes-cell: signs share links')
 WHERE NOT EXISTS (SELECT 1 FROM vault.secrets WHERE name = 'NOTES_SHARE_KEY');
