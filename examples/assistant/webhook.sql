-- assistant: each usage row to the `skill-weights` function, through Spine's
-- database webhook (a job per row in the writing transaction, retried, delivered
-- at least once; the function applies a row once). Applied after the functions
-- are deployed (a webhook's function must exist). Idempotent.
SELECT spine.create_webhook('assistant_skill_usage', 'public.skill_usage', ARRAY['INSERT'],
                            '{"function": "skill-weights"}')
 WHERE NOT EXISTS (SELECT 1 FROM spine.webhooks WHERE name = 'assistant_skill_usage');
