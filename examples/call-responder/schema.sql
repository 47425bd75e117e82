SET client_min_messages = warning;
-- call-responder: the founding call flow on Spine.
-- Applied by `cargo xtask example call-responder` (and the example's test) as the
-- database owner, after Spine's migrations. Idempotent: run it again freely.

-- Which user a phone number belongs to: the number Twilio calls (`To`).
CREATE TABLE IF NOT EXISTS public.phone_numbers (
    number   text PRIMARY KEY CHECK (number ~ '^\+[1-9][0-9]{6,14}$'),
    owner_id uuid NOT NULL DEFAULT auth.uid(),
    label    text
);
ALTER TABLE public.phone_numbers ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS phone_numbers_owner ON public.phone_numbers;
CREATE POLICY phone_numbers_owner ON public.phone_numbers
    FOR ALL TO authenticated USING (owner_id = auth.uid()) WITH CHECK (owner_id = auth.uid());
GRANT SELECT, INSERT, UPDATE, DELETE ON public.phone_numbers TO authenticated;

-- The inbound webhook runs as anon until it knows whose call it is: this is the
-- one thing anon may ask, and it answers a user id, nothing else.
CREATE OR REPLACE FUNCTION public.owner_of_number(number text) RETURNS uuid
    LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
    SELECT owner_id FROM public.phone_numbers WHERE phone_numbers.number = owner_of_number.number
$$;
REVOKE EXECUTE ON FUNCTION public.owner_of_number(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.owner_of_number(text) TO anon, authenticated;

-- Calls received, one row per Twilio CallSid: Twilio retries a webhook it got no
-- answer for, and a replayed call must not start the flow again.
CREATE TABLE IF NOT EXISTS public.calls (
    call_sid    text PRIMARY KEY CHECK (call_sid ~ '^CA[0-9a-f]{32}$'),
    owner_id    uuid NOT NULL DEFAULT auth.uid(),
    from_number text NOT NULL,
    to_number   text NOT NULL,
    person_id   uuid,
    event_id    uuid,
    received_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.calls ENABLE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS calls_owner ON public.calls;
CREATE POLICY calls_owner ON public.calls
    FOR ALL TO authenticated USING (owner_id = auth.uid()) WITH CHECK (owner_id = auth.uid());
GRANT SELECT, INSERT, UPDATE ON public.calls TO authenticated;

-- Records a call for the calling user and, the first time its CallSid is seen,
-- emits communication.CallStarted with the caller resolved to one of the user's
-- people (by phone key): in one transaction, so the event exists exactly when the
-- call row does. Returns the event's id; NULL for a replay. SECURITY INVOKER: RLS
-- and, called by a plugin, the plugin's entity permissions apply.
CREATE OR REPLACE FUNCTION public.record_call(call_sid text, from_number text, to_number text)
    RETURNS uuid LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    person spine.entities;
    event uuid;
BEGIN
    INSERT INTO public.calls (call_sid, from_number, to_number)
    VALUES (record_call.call_sid, from_number, to_number)
    ON CONFLICT ON CONSTRAINT calls_pkey DO NOTHING;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    SELECT e.* INTO person
      FROM spine.entity_keys k JOIN spine.entities e ON e.id = k.entity_id
     WHERE k.key_type = 'phone' AND k.key_value = from_number AND e.kind = 'person'
     LIMIT 1;
    event := spine.emit('communication.CallStarted',
        jsonb_build_object('from', from_number, 'to', to_number,
                           'caller', coalesce(person.data->>'relation', person.data->>'name', from_number),
                           'person_id', person.id),
        'call/' || record_call.call_sid);
    UPDATE public.calls SET person_id = person.id, event_id = event
     WHERE calls.call_sid = record_call.call_sid;
    RETURN event;
END
$$;
REVOKE EXECUTE ON FUNCTION public.record_call(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.record_call(text, text, text) TO authenticated;

-- SendOutgoingMessage jobs wait here (a queue users' rules may enqueue to); the worker
-- runs it with the function handler: each job calls the `sms` plugin.
SELECT spine.create_queue('send_outgoing_message', user_enqueue => true)
 WHERE NOT EXISTS (SELECT 1 FROM spine.queues WHERE name = 'send_outgoing_message');
