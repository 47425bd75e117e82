-- hub: the personal-data hub on Spine. Applied as the database owner.
-- People are Spine entities (kind person): RLS already says "users own their
-- persons" (spine.entities: owner_id = auth.uid()). The hub adds what its page
-- needs: nothing else is stored outside Spine.
SET client_min_messages = warning;

-- The CRM connector's source, per user, is saved by the user (supabase-js,
-- spine.save_source); this view is what the page lists: a user's people.
CREATE OR REPLACE VIEW public.my_people WITH (security_invoker = true) AS
    SELECT e.id, e.data->>'name' AS name, e.data->>'email' AS email, e.data->>'phone' AS phone,
           e.updated_at
      FROM spine.entities e
     WHERE e.kind = 'person';
GRANT SELECT ON public.my_people TO authenticated;
